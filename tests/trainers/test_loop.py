from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynsweep.errors import TrialFailure
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import RecordSpec
from trainers.trajectory import read_trajectory

SMALL = ClassifierConfig(model={"widths": [16]}, batch_size=32)


def weights(trainer) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]).numpy()


def test_recorded_weights_at_step_k_are_the_weights_after_k_steps(tmp_path):
    loop = LoopConfig(record=(RecordSpec(probe="weights"),), chunk_steps=8)
    trainer = ClassifierTrainer(SMALL)
    fit(trainer, LocalContext(tmp_path), loop, StopRule(iterations=30))
    traj = read_trajectory(tmp_path / "trajectories" / "weights")
    np.testing.assert_array_equal(traj.steps, np.arange(31))
    np.testing.assert_array_equal(traj.values[-1], weights(trainer))
    for k in (0, 1, 17):
        again = ClassifierTrainer(SMALL)
        fit(
            again, LocalContext(tmp_path / f"k{k}"), LoopConfig(), StopRule(iterations=k)
        ) if k else again.setup(LocalContext(tmp_path / "k0"))
        np.testing.assert_array_equal(traj.values[k], weights(again))
    assert traj.columns["layers.1.0.weight"] == [0, 64 * 16]


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    loop = LoopConfig(checkpoint_every=10, report_every=5, eval_every=7)
    whole = ClassifierTrainer(SMALL)
    whole_ctx = LocalContext(tmp_path / "whole")
    fit(whole, whole_ctx, loop, StopRule(iterations=25))

    first_ctx = LocalContext(tmp_path / "part")
    fit(ClassifierTrainer(SMALL), first_ctx, loop, StopRule(iterations=20))
    resumed = ClassifierTrainer(SMALL)
    second_ctx = LocalContext(tmp_path / "part")
    fit(
        resumed,
        second_ctx,
        loop,
        StopRule(iterations=25),
        resume=first_ctx.last_checkpoint,
        attempt=1,
    )
    np.testing.assert_array_equal(weights(resumed), weights(whole))
    tail = [m for s, m in whole_ctx.metrics if s > 20]
    assert [m for s, m in second_ctx.metrics if s > 20] == tail


def test_cadences_and_metrics(tmp_path):
    ctx = LocalContext(tmp_path)
    loop = LoopConfig(
        report_every=4,
        checkpoint_every=6,
        eval_every="epoch",
        record=(RecordSpec(probe="activations", every="epoch"),),
    )
    trainer = ClassifierTrainer(SMALL)
    result = fit(trainer, ctx, loop, StopRule(iterations=100))
    spe = trainer.steps_per_epoch
    assert spe == 45  # 1437 training digits in batches of 32
    eval_steps = [s for s, m in ctx.metrics if "val/acc" in m]
    assert eval_steps == [0, 45, 90, 100]
    assert [s for s, _ in ctx.reports] == [s for s in range(1, 101) if s % 4 == 0 or s % 6 == 0]
    assert [s for s, m in ctx.metrics if "train/loss" in m] == list(range(1, 101))
    acts = read_trajectory(tmp_path / "trajectories" / "activations")
    np.testing.assert_array_equal(acts.steps, [0, spe, 2 * spe])
    assert acts.values.shape == (3, 32, 16)
    assert result.stop_reason == "iterations" and result.metrics["val/acc"] > 0.5


def test_metric_threshold_and_time_stop(tmp_path):
    stop = StopRule(iterations=500, metric="val/acc", threshold=0.5, mode="max")
    result = fit(ClassifierTrainer(SMALL), LocalContext(tmp_path), LoopConfig(eval_every=5), stop)
    assert result.stop_reason == "metric" and result.step < 500 and result.step % 5 == 0
    result = fit(
        ClassifierTrainer(SMALL),
        LocalContext(tmp_path / "t"),
        LoopConfig(),
        StopRule(iterations=10**6, time_s=0.3),
    )
    assert result.stop_reason == "time" and result.step < 10**6


def test_non_finite_loss_fails_with_the_step_and_metric(tmp_path):
    diverging = ClassifierConfig(model={"widths": [16]}, optimizer={"lr": 1e30})
    ctx = LocalContext(tmp_path)
    with pytest.raises(
        TrialFailure, match=r"non-finite metric at step \d+: train/loss = (nan|inf)"
    ):
        fit(ClassifierTrainer(diverging), ctx, LoopConfig(), StopRule(iterations=200))
    assert all(math.isfinite(v) for _, m in ctx.metrics for v in m.values())


def test_loaded_state_keeps_this_trainers_hyperparameters(tmp_path):
    donor = ClassifierTrainer(ClassifierConfig(model={"widths": [16]}, optimizer={"lr": 0.3}))
    donor.setup(LocalContext(tmp_path))
    donor.step()
    mine = ClassifierTrainer(ClassifierConfig(model={"widths": [16]}, optimizer={"lr": 0.01}))
    mine.setup(LocalContext(tmp_path))
    mine.load_state_dict(donor.state_dict())  # a PBT exploit: weights from the donor
    assert mine.optimizer.param_groups[0]["lr"] == 0.01
    np.testing.assert_array_equal(weights(mine), weights(donor))


def test_cnn_classifier_trains(tmp_path):
    cfg = ClassifierConfig(model={"kind": "cnn", "channels": [4, 8]}, optimizer={"lr": 0.1})
    ctx = LocalContext(tmp_path)
    result = fit(ClassifierTrainer(cfg), ctx, LoopConfig(eval_every=20), StopRule(iterations=60))
    first = ctx.metrics[0][1]["val/loss"]
    assert result.metrics["val/loss"] < first
