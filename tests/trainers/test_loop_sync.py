"""Tensor metrics: the loop copies them to the host in batches, and everything it logs, records,
reports and fails on equals what a trainer returning floats gets, step for step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import Field

from dynsweep.errors import TrialFailure
from trainers import loop as loop_module
from trainers.base import Trainer, TrainerConfig
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.packing import host_metrics
from trainers.recording import RecordSpec
from trainers.trajectory import read_trajectory

SMALL = ClassifierConfig(model={"widths": [16]}, batch_size=32)
RECORD = (RecordSpec(probe="weights"), RecordSpec(probe="grads", every=3, dtype="float16"))
LOOP = LoopConfig(report_every=7, eval_every=5, checkpoint_every=10, chunk_steps=4, record=RECORD)


class FloatClassifier(ClassifierTrainer):
    """Today's contract: the same trainer, its metrics as floats (one sync per value)."""

    def step(self):
        return host_metrics(super().step())

    def evaluate(self):
        return host_metrics(super().evaluate())


def nan_at(cls, bad_step: int, key: str = "train/loss"):
    """``cls`` with ``key`` replaced by NaN at step ``bad_step`` (in the trainer's own type)."""

    class Diverging(cls):
        def step(self):
            self.calls = getattr(self, "calls", 0) + 1
            metrics = super().step()
            if self.calls == bad_step:
                value = metrics[key]
                nan = float("nan")
                metrics[key] = torch.full_like(value, nan) if torch.is_tensor(value) else nan
            return metrics

    return Diverging


def trajectories(ctx: LocalContext) -> dict[str, Any]:
    out = {}
    for name in ("weights", "grads"):
        folder = ctx.trajectory_dir / name
        if folder.exists():
            traj = read_trajectory(folder)
            out[name] = (traj.steps, traj.values)
    return out


def assert_same_trajectories(a: LocalContext, b: LocalContext) -> None:
    ta, tb = trajectories(a), trajectories(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        np.testing.assert_array_equal(ta[name][0], tb[name][0])
        np.testing.assert_array_equal(ta[name][1], tb[name][1])


def test_tensor_metrics_equal_float_metrics_step_for_step(tmp_path, monkeypatch):
    transfers = []
    original = loop_module.host_values
    monkeypatch.setattr(
        loop_module, "host_values", lambda dicts: transfers.append(len(dicts)) or original(dicts)
    )
    stop = StopRule(iterations=33)
    tensors, plain = LocalContext(tmp_path / "t"), LocalContext(tmp_path / "f")
    result = fit(ClassifierTrainer(SMALL), tensors, LOOP, stop)
    # One transfer for the starting state's evaluation, one per report (steps 7, 10, 14, 20,
    # 21, 28, 30) and one at the end: not 34 (each step is two dicts, step() and evaluate()).
    assert len(transfers) == 9 and sum(transfers) == 2 * 34
    expected = fit(FloatClassifier(SMALL), plain, LOOP, stop)
    assert len(transfers) == 9  # floats never wait: nothing to copy
    assert tensors.metrics == plain.metrics  # same steps, same values, same order
    assert [s for s, _ in tensors.metrics] == list(range(34))
    assert all(type(v) is float for _, m in tensors.metrics for v in m.values())
    assert tensors.reports == plain.reports
    assert result == expected
    assert_same_trajectories(tensors, plain)
    assert tensors.last_checkpoint["step"] == plain.last_checkpoint["step"] == 33


@pytest.mark.parametrize("bad_step, on_disk", [(1, True), (6, True), (7, True), (9, False)])
def test_nan_fails_at_its_own_step_with_the_steps_before_it_logged(tmp_path, bad_step, on_disk):
    """Found up to report_every steps late; what was logged and recorded is as if found at
    once. With chunks of 4 rows, rows from the bad step on may already be on disk when it is
    found (``on_disk``: then a marker voids them) or still in memory (dropped)."""
    runs = {}
    for kind, cls in (("tensors", ClassifierTrainer), ("floats", FloatClassifier)):
        ctx = LocalContext(tmp_path / kind)
        message = rf"^non-finite metric at step {bad_step}: train/loss = nan$"
        with pytest.raises(TrialFailure, match=message):
            fit(nan_at(cls, bad_step)(SMALL), ctx, LOOP, StopRule(iterations=30))
        runs[kind] = ctx
    tensors, plain = runs["tensors"], runs["floats"]
    assert [s for s, _ in tensors.metrics] == list(range(bad_step))
    assert tensors.metrics == plain.metrics
    assert tensors.reports == plain.reports
    assert_same_trajectories(tensors, plain)
    np.testing.assert_array_equal(trajectories(tensors)["weights"][0], np.arange(bad_step))
    assert (tensors.trajectory_dir / "weights" / "discard-000.json").exists() == on_disk


def test_nan_in_an_evaluation_keeps_that_steps_recording(tmp_path):
    runs = {}
    for kind, cls in (("tensors", ClassifierTrainer), ("floats", FloatClassifier)):

        class BadEval(cls):
            def evaluate(self):
                metrics = super().evaluate()
                self.evals = getattr(self, "evals", 0) + 1
                if self.evals == 3:  # step 10: after step 0 and step 5
                    metrics["val/acc"] = metrics["val/acc"] * float("inf")
                return metrics

        ctx = LocalContext(tmp_path / kind)
        with pytest.raises(TrialFailure, match=r"^non-finite metric at step 10: val/acc = inf$"):
            fit(BadEval(SMALL), ctx, LOOP, StopRule(iterations=30))
        runs[kind] = ctx
    assert runs["tensors"].metrics == runs["floats"].metrics
    assert_same_trajectories(runs["tensors"], runs["floats"])
    np.testing.assert_array_equal(trajectories(runs["tensors"])["weights"][0], np.arange(11))


def test_an_exception_logs_the_pending_steps_first(tmp_path):
    class Crashing(ClassifierTrainer):
        def step(self):
            self.done = getattr(self, "done", 0) + 1
            if self.done == 13:
                raise RuntimeError("injected")
            return super().step()

    ctx = LocalContext(tmp_path)
    with pytest.raises(RuntimeError, match="injected"):
        fit(Crashing(SMALL), ctx, LOOP, StopRule(iterations=30))
    assert [s for s, _ in ctx.metrics] == list(range(13))

    # A NaN among the pending steps was the first failure: it wins.
    crash_after_nan = type("CrashAfterNan", (nan_at(Crashing, 11),), {})
    ctx = LocalContext(tmp_path / "nan")
    with pytest.raises(TrialFailure, match=r"at step 11: train/loss = nan") as info:
        fit(crash_after_nan(SMALL), ctx, LOOP, StopRule(iterations=30))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert [s for s, _ in ctx.metrics] == list(range(11))


class CrashAt13(ClassifierTrainer):
    def step(self):
        self.done = getattr(self, "done", 0) + 1
        if self.done == 13:
            self.crashed = True
            raise RuntimeError("injected")
        return super().step()


def test_a_failed_copy_after_an_exception_keeps_the_trainers_error(tmp_path, monkeypatch):
    """The device broke (the copy of the pending steps raises too): the trainer's error is
    raised, with a note that the pending steps (11, 12) were not logged."""
    trainer, original = CrashAt13(SMALL), loop_module.host_values

    def copy(dicts):
        if getattr(trainer, "crashed", False):
            raise RuntimeError("device lost")
        return original(dicts)

    monkeypatch.setattr(loop_module, "host_values", copy)
    ctx = LocalContext(tmp_path)
    with pytest.raises(RuntimeError) as info:
        fit(trainer, ctx, LOOP, StopRule(iterations=30))
    assert info.value.args == ("injected",)
    assert info.value.__notes__ == ["2 pending steps were not logged: RuntimeError('device lost')"]
    assert [s for s, _ in ctx.metrics] == list(range(11))


def test_a_sink_error_after_an_exception_is_raised_chained_to_it(tmp_path):
    """Logging the pending steps fails (the store): that error is not swallowed."""

    class BrokenStore(LocalContext):
        def log_metrics(self, step, metrics):
            if step == 12:
                raise OSError("store gone")
            super().log_metrics(step, metrics)

    ctx = BrokenStore(tmp_path)
    with pytest.raises(OSError, match="store gone") as info:
        fit(CrashAt13(SMALL), ctx, LOOP, StopRule(iterations=30))
    assert str(info.value.__context__) == "injected"
    assert [s for s, _ in ctx.metrics] == list(range(12))


@pytest.mark.parametrize(
    "stop",
    [
        StopRule(iterations=300, metric="train/acc", threshold=0.55),
        StopRule(iterations=300, metric="val/acc", threshold=0.5),
        StopRule(iterations=300, metric="train/loss", threshold=1.8, mode="min"),
    ],
)
def test_metric_stop_rules_stop_at_the_same_step(tmp_path, stop):
    loop = LoopConfig(report_every=50, eval_every=5, checkpoint_every=100)
    tensors, plain = LocalContext(tmp_path / "t"), LocalContext(tmp_path / "f")
    result = fit(ClassifierTrainer(SMALL), tensors, loop, stop)
    expected = fit(FloatClassifier(SMALL), plain, loop, stop)
    assert result.stop_reason == "metric" and 1 < result.step < 300
    assert result == expected
    assert tensors.metrics == plain.metrics


def test_time_stop_settles_the_last_steps(tmp_path):
    loop = LoopConfig(report_every=10**6, eval_every=10**6, checkpoint_every=10**6)
    ctx = LocalContext(tmp_path)
    result = fit(ClassifierTrainer(SMALL), ctx, loop, StopRule(iterations=10**6, time_s=0.3))
    assert result.stop_reason == "time"
    assert [s for s, _ in ctx.metrics] == list(range(result.step + 1))
    assert result.metrics == ctx.metrics[-1][1]


class ToyConfig(TrainerConfig):
    lr: tuple[float, ...] = (0.1, 0.2, 0.3)
    bad_member: int = -1
    bad_step: int = Field(0, ge=0)
    as_lists: bool = False  # metrics as lists of floats (the packed contract before tensors)


class PackedToy(Trainer):
    """Members fit w to a target by gradient descent, one learning rate each; member
    ``bad_member`` reports NaN from ``bad_step`` on."""

    Config = ToyConfig
    probes = ("weights",)

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.pack_size = len(config.lr)

    def setup(self, ctx) -> None:
        gen = torch.Generator().manual_seed(ctx.seed)
        self.w = torch.zeros(self.pack_size, 5)
        self.target = torch.randn(5, generator=gen)
        self.lr = torch.tensor(self.config.lr)[:, None]
        self.done = 0

    def step(self):
        self.done += 1
        grad = 2 * (self.w - self.target)
        self.w -= self.lr * grad
        loss = (self.w - self.target).pow(2).sum(1)
        cfg = self.config
        if cfg.bad_member >= 0 and self.done >= cfg.bad_step:
            loss[cfg.bad_member] = float("nan")
        out = {"train/loss": loss, "train/w0": self.w[:, 0].clone()}
        return host_metrics(out) if cfg.as_lists else out

    def evaluate(self):
        out = {"val/dist": (self.w - self.target).norm(dim=1)}
        return host_metrics(out) if self.config.as_lists else out

    def probe(self, name: str) -> torch.Tensor:
        return self.w

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w.copy_(state["w"])
        self.done = state["done"]


def test_packed_member_nan_fails_only_that_member(tmp_path):
    loop = LoopConfig(
        report_every=8, eval_every=4, checkpoint_every=16, chunk_steps=3, record=(RECORD[0],)
    )
    runs = {}
    for as_lists in (False, True):
        ctx = LocalContext.packed(tmp_path / str(as_lists), 3)
        cfg = ToyConfig(bad_member=1, bad_step=7, as_lists=as_lists)
        result = fit(PackedToy(cfg), ctx, loop, StopRule(iterations=20))
        runs[as_lists] = (ctx, result)
    (ctx, result), (plain, expected) = runs[False], runs[True]
    bad, good = ctx.member_contexts[1], ctx.member_contexts[0]
    assert bad.failure == "non-finite metric at step 7: train/loss = nan"
    assert [s for s, _ in bad.metrics] == list(range(7))
    assert good.failure is None and [s for s, _ in good.metrics] == list(range(21))
    assert result == expected and result.metrics["pack/live_members"] == 2.0
    assert ctx.reports == plain.reports
    for mine, theirs in zip(ctx.member_contexts, plain.member_contexts):
        assert mine.metrics == theirs.metrics and mine.failure == theirs.failure
        assert_same_trajectories(mine, theirs)
    np.testing.assert_array_equal(trajectories(bad)["weights"][0], np.arange(7))
    np.testing.assert_array_equal(trajectories(good)["weights"][0], np.arange(21))


def test_all_members_diverging_fails_the_trial_at_the_first_bad_step(tmp_path):
    ctx = LocalContext.packed(tmp_path, 1)
    with pytest.raises(TrialFailure, match=r"^non-finite metric at step 5: train/loss = nan$"):
        fit(
            PackedToy(ToyConfig(lr=(0.1,), bad_member=0, bad_step=5)),
            ctx,
            LoopConfig(report_every=10),
            StopRule(iterations=20),
        )
    assert [s for s, _ in ctx.member_contexts[0].metrics] == list(range(5))


def test_at_most_max_pending_steps_wait_on_the_device(tmp_path, monkeypatch):
    transfers, original = [], loop_module.host_values
    monkeypatch.setattr(
        loop_module, "host_values", lambda dicts: transfers.append(len(dicts)) or original(dicts)
    )
    monkeypatch.setattr(loop_module, "MAX_PENDING_STEPS", 4)
    loop = LoopConfig(report_every=10**6, eval_every=10**6, checkpoint_every=10**6)
    ctx = LocalContext(tmp_path)
    fit(ClassifierTrainer(SMALL), ctx, loop, StopRule(iterations=10))
    # The starting state, steps 1-4, 5-8, then 9-10 (the last step): two dicts a step.
    assert transfers == [2, 8, 8, 4]
    assert [s for s, _ in ctx.metrics] == list(range(11))
