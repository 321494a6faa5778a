"""The one training loop for every trainer.

The loop owns the iteration count, the report / eval / checkpoint / record cadences, NaN and
inf detection, and the stop rules. The trainer only does one step at a time.

Step numbering: step ``k`` is the state after ``k`` optimiser steps; metrics returned by the
``k``-th call of ``trainer.step()`` are logged at step ``k``, and recordings made at step ``k``
are taken after that update. Step 0 (the initial state) is recorded on a fresh start.

A packed trainer (:mod:`trainers.packing`) trains several grid points at once: each member's
values go to its own sink in ``ctx.members`` (metrics, recordings), a member whose metrics turn
non-finite is failed alone, and the scheduler sees the mean over the members still alive.

Metric values may be floats or tensors (0-d, or 1-d with one value per member of a packed
trainer). Every step's values take one path: they join the pending steps (``_Pending``), the
step is recorded and, when due, evaluated, and the pending steps are then *settled* (copied,
checked, logged in order) when a value is needed: at once when no value waits on the device
(floats: a pending list of one step), else at a report or checkpoint (every ``report_every``
steps), a metric stop rule whose metric is in that step's row (then every such step), the
last step, ``MAX_PENDING_STEPS`` waiting, or an exception. Tensors are copied to the host in
one transfer (one per device and dtype; CPU tensors are simply read) and logged step by step,
with their own step numbers, as if logged at once. On a GPU this removes a host-device sync
per step. The price: a non-finite tensor value is found up to ``report_every`` steps late (at
most ``MAX_PENDING_STEPS``). The trial (or the member) still fails with the first bad step's
message, every finite step before it is logged, and the recordings made from that step on are
discarded (:meth:`trainers.recording.Recorder.discard_from`), so what is kept equals an
immediate check; only the extra steps' compute is lost. (A non-finite float is found after
its own step's recording and evaluation, and that recording is discarded the same way.)
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynsweep.errors import TrialFailure
from trainers.base import Context, FitResult, Trainer
from trainers.packing import member_rows
from trainers.recording import Every, Recorder, RecordSpec

MAX_PENDING_STEPS = 1000  # steps whose tensor metrics may wait on the device, whatever the cadences
LIVE_MEMBERS = "pack/live_members"  # the scheduler's count of a pack's members still training


class StopRule(BaseModel):
    """When a trial ends: after ``iterations`` steps, ``time_s`` seconds, or a metric threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    iterations: int = Field(200, ge=1)
    time_s: float | None = Field(None, gt=0)
    metric: str | None = None
    threshold: float | None = None
    mode: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _pair(self) -> StopRule:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("metric and threshold must be given together")
        return self


class LoopConfig(BaseModel):
    """Cadences of the loop, in steps (``'epoch'``: once per pass over the training data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    report_every: int = Field(10, ge=1)
    eval_every: Every = "epoch"
    checkpoint_every: int = Field(100, ge=1)
    record: tuple[RecordSpec, ...] = ()
    chunk_steps: int = Field(64, ge=1)
    compression: Literal["none", "lz4", "zstd"] = "none"
    record_budget_gb: float = Field(20.0, gt=0)  # refuse sweeps that would record more
    # figures/learning_curves.png per trial (drawn from the stored histories at its end,
    # ~0.4 s a trial on a slow CPU: turn off for sweeps of very many tiny trials)
    learning_curves: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> LoopConfig:
        names = [r.trajectory for r in self.record]
        if len(names) != len(set(names)):
            raise ValueError("two record entries write the same trajectory; give one a name")
        return self


def _due(step: int, every: Every, steps_per_epoch: int | None) -> bool:
    if every == "epoch":
        return steps_per_epoch is not None and step % steps_per_epoch == 0
    return step % every == 0


class _Members:
    """Where a step's values go: each member's sink (metrics) and recorder (trajectories),
    and which members are still alive."""

    def __init__(
        self, ctx: Context, trainer: Trainer, loop: LoopConfig, attempt: int, resumed: int | None
    ) -> None:
        if len(ctx.members) != trainer.pack_size:
            raise ValueError(
                f"the trainer packs {trainer.pack_size} members; the context has {len(ctx.members)}"
            )
        self.sinks, self.pack_size = ctx.members, trainer.pack_size
        # members not failed, in order (a retried pack's member that failed for good is out)
        self.live = [i for i, sink in enumerate(self.sinks) if not sink.closed]
        if not self.live:
            raise TrialFailure("every member of this pack has failed already")
        self.trainer, self.specs, self.columns = trainer, loop.record, {}
        self.steps_per_epoch = trainer.steps_per_epoch
        self.recorders = [
            Recorder(
                sink.trajectory_dir,
                attempt=attempt,
                resumed_from=resumed,
                chunk_steps=loop.chunk_steps,
                compression=loop.compression,
                on_file=sink.on_trajectory_file,
            )
            for sink in self.sinks
        ]

    def record(self, step: int) -> None:
        """Record every probe due at ``step`` (all of them at step 0) for the live members."""
        for spec in self.specs:
            if step == 0 or _due(step, spec.every, self.steps_per_epoch):
                if spec.probe not in self.columns:
                    self.columns[spec.probe] = self.trainer.probe_columns(spec.probe)
                value = self.trainer.probe(spec.probe)
                for i in self.live:  # a packed probe has one row per member
                    one = value if self.pack_size == 1 else value[i]
                    self.recorders[i].record(
                        spec.trajectory, step, one, self.columns[spec.probe], spec
                    )

    def check(self, step: int, metrics: dict, cut: int) -> list[dict[str, float]]:
        """Rows per member; a member with a non-finite value is failed (the trial, when it
        was the last one alive) and its recordings from step ``cut`` on are discarded."""
        rows = member_rows(metrics, self.pack_size)
        for i in self.live:
            bad = {k: v for k, v in rows[i].items() if not math.isfinite(v)}
            if bad:
                shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
                message = f"non-finite metric at step {step}: {shown}"
                self.live = [j for j in self.live if j != i]
                self.recorders[i].discard_from(cut)
                if not self.live:
                    raise TrialFailure(message)
                self.sinks[i].fail(message)
        return rows

    def log(self, step: int, rows: list[dict[str, float]]) -> None:
        for i in self.live:
            self.sinks[i].log_metrics(step, rows[i])

    def summary(self, rows: list[dict[str, float]]) -> dict[str, float]:
        """What the scheduler sees: the row itself, or the mean over live members."""
        if self.pack_size == 1:
            return rows[0]
        live = [rows[i] for i in self.live]
        out = {k: math.fsum(r[k] for r in live) / len(live) for k in live[0]}
        return {**out, LIVE_MEMBERS: float(len(live))}

    def checkpoint(self, step: int, elapsed_s: float) -> dict[str, Any]:
        for recorder in self.recorders:  # every row up to this step is on disk first
            recorder.flush()
        return {"trainer": self.trainer.state_dict(), "step": step, "elapsed_s": elapsed_s}

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.close()


class _Pending:
    """Steps whose metrics are not checked and logged yet: ``[step, step() metrics or None,
    evaluate() metrics or None]``.

    Every step passes through here. A step of floats is a pending list of one, settled in the
    same iteration; steps holding tensors wait on the device until a value is needed, then
    are settled together with one transfer (at most :data:`MAX_PENDING_STEPS` wait).
    """

    def __init__(self, members: _Members) -> None:
        self.members = members
        self.steps: list[list] = []
        self.on_device = False  # a waiting value is a tensor

    def add(self, step: int, train: dict | None) -> None:
        self.steps.append([step, train, None])
        self.on_device = self.on_device or _holds_tensors(train or {})

    def add_evaluation(self, values: dict) -> None:
        """``evaluate()``'s metrics, taken after the newest step (and its recording)."""
        self.steps[-1][2] = values
        self.on_device = self.on_device or _holds_tensors(values)

    def must_settle(self, stop: StopRule, due: bool) -> bool:
        """Whether to settle now: ``due`` (a report, a checkpoint, the end), nothing waits on
        the device, the bound is reached, or the metric stop rule needs the newest values
        (its metric is in that step's row, or is the pack's live-member count)."""
        if due or not self.on_device or len(self.steps) >= MAX_PENDING_STEPS:
            return True
        if stop.metric is None:
            return False
        _, train, evaluation = self.steps[-1]
        return (
            stop.metric in train or stop.metric in (evaluation or ()) or stop.metric == LIVE_MEMBERS
        )

    def settle(self) -> list[dict[str, float]]:
        """Check and log every pending step in order; the last step's rows."""
        return self._log(self._fetch())

    def settle_after(self, exc: Exception) -> None:
        """Something raised ``exc`` with steps pending: log them. A non-finite value among them
        was the first failure: it is raised, chained to ``exc``. When the copy from the device
        fails (the device is broken: torch raises a ``RuntimeError``), ``exc`` stays the error
        raised, with a note, and the steps are not logged. An error of a sink propagates (its
        context is ``exc``)."""
        if not self.steps:
            return
        try:
            entries = self._fetch()
        except RuntimeError as error:
            exc.add_note(f"{len(self.steps)} pending steps were not logged: {error!r}")
            self.steps.clear()
            return
        try:
            self._log(entries)
        except TrialFailure as failure:
            raise failure from exc

    def _fetch(self) -> list[list]:
        """The pending steps, taken out, with every tensor copied to the host in one transfer
        (one per device and dtype)."""
        entries = self.steps
        if self.on_device:
            flat = host_values([d or {} for _, train, ev in entries for d in (train, ev)])
            entries = [
                [
                    step,
                    None if train is None else flat[2 * n],
                    None if ev is None else flat[2 * n + 1],
                ]
                for n, (step, train, ev) in enumerate(entries)
            ]
        self.steps, self.on_device = [], False
        return entries

    def _log(self, entries: list[list]) -> list[dict[str, float]]:
        members = self.members
        for step, train, evaluation in entries:
            if train is None:  # the starting state: its evaluation only
                rows = members.check(step, evaluation, cut=step + 1)
            else:
                rows = members.check(step, train, cut=step)  # no recording of a bad step
                if evaluation is not None:  # evaluated after the step's recording: it stays
                    for row, values in zip(rows, members.check(step, evaluation, cut=step + 1)):
                        row.update(values)
            members.log(step, rows)
        return rows


def fit(
    trainer: Trainer,
    ctx: Context,
    loop: LoopConfig,
    stop: StopRule,
    resume: dict[str, Any] | None = None,
    attempt: int = 0,
) -> FitResult:
    """Train ``trainer`` until ``stop`` says so, reporting and checkpointing through ``ctx``.

    ``resume`` is a checkpoint this loop produced (``{"trainer", "step", "elapsed_s"}``); the
    trainer continues from it and recordings resume without gaps or duplicates.
    """
    trainer.setup(ctx)
    start, elapsed_before = 0, 0.0
    if resume is not None:
        trainer.load_state_dict(resume["trainer"])
        start, elapsed_before = int(resume["step"]), float(resume["elapsed_s"])
    members = _Members(ctx, trainer, loop, attempt, start if resume is not None else None)
    pending = _Pending(members)
    t0 = time.monotonic() - elapsed_before  # elapsed time, across attempts: monotonic() - t0
    try:
        # Evaluate the starting state, so every report carries the eval metrics (schedulers
        # compare trials on them) and step 0 of a fresh run has its baseline.
        pending.add(start, None)
        pending.add_evaluation(trainer.evaluate())
        metrics = members.summary(pending.settle())
        if resume is None:
            members.record(0)
        step, reason = start, None
        try:
            while step < stop.iterations:
                step += 1
                pending.add(step, trainer.step())
                members.record(step)
                last = step == stop.iterations
                if last or _due(step, loop.eval_every, members.steps_per_epoch):
                    pending.add_evaluation(trainer.evaluate())
                time_up = stop.time_s is not None and time.monotonic() - t0 >= stop.time_s
                checkpoint = step % loop.checkpoint_every == 0
                report = checkpoint or step % loop.report_every == 0
                if not pending.must_settle(stop, due=time_up or report or last):
                    continue
                metrics = members.summary(pending.settle())
                reason = "time" if time_up else _metric_reached(stop, metrics)
                if reason is not None or last:
                    break
                if report:
                    saved = members.checkpoint(step, time.monotonic() - t0) if checkpoint else None
                    ctx.report(step, metrics, saved)
        except Exception as exc:
            if not isinstance(exc, TrialFailure):
                pending.settle_after(exc)  # log the steps done, or fail at an earlier NaN
            raise
        result = FitResult(step=step, metrics=metrics, stop_reason=reason or "iterations")
        if ctx.parallel.chief:
            folder = ctx.workdir / "artifacts"
            folder.mkdir(parents=True, exist_ok=True)
            for path in trainer.write_artifacts(folder):
                ctx.log_file(path, "figures")
        ctx.finish(result, members.checkpoint(step, time.monotonic() - t0), trainer.export())
        return result
    finally:
        members.close()


def _holds_tensors(metrics: dict) -> bool:
    return any(isinstance(v, torch.Tensor) for v in metrics.values())


def host_values(dicts: list[dict]) -> list[dict]:
    """``dicts`` with every tensor value replaced by its host value: a 0-d tensor by a number,
    a 1-d one by a list. Tensors on a device are copied in one transfer per device and dtype;
    CPU tensors are read directly (stacking them would cost more than it saves)."""
    out: list[dict] = []
    remote: dict[tuple, list[tuple[int, str, torch.Tensor]]] = {}
    for i, d in enumerate(dicts):
        row = {}
        for k, v in d.items():
            if isinstance(v, torch.Tensor):
                if v.is_cpu:
                    v = v.tolist()  # a number for a 0-d tensor
                else:
                    remote.setdefault((v.device, v.dtype), []).append((i, k, v))
            row[k] = v
        out.append(row)
    with torch.no_grad():
        for items in remote.values():
            tensors = [v for _, _, v in items]
            if all(t.dim() == 0 for t in tensors):
                values = torch.stack(tensors).tolist()
            else:
                flat = torch.cat([t.reshape(-1) for t in tensors]).tolist()
                values, pos = [], 0
                for t in tensors:
                    n = t.numel()
                    values.append(flat[pos] if t.dim() == 0 else flat[pos : pos + n])
                    pos += n
            for (i, k, _), value in zip(items, values):
                out[i][k] = value
    return out


def _metric_reached(stop: StopRule, metrics: dict[str, float]) -> str | None:
    """``"metric"`` when the stop rule's metric crossed its threshold, else ``None``."""
    if stop.metric is not None and stop.metric in metrics:
        value = metrics[stop.metric]
        if value >= stop.threshold if stop.mode == "max" else value <= stop.threshold:
            return "metric"
    return None
