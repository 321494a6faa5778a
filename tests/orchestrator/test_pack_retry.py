"""A retried pack does not train its diverged members again: their runs stay FAILED with the
first reason (``dynsweep.fatal``), the loop leaves them out, and a pack whose members all
failed for good fails at once — as a retried plain trial does."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

import tracking
from dynsweep.errors import TrialFailure
from orchestrator.context import TrialContext, TrialPoint, end_fatal_runs, open_runs
from orchestrator.packing import member_contexts
from tests.trainers.test_packing import LOOP
from tracking import tags as tag
from tracking.sender import MetricSender
from trainers.local import LocalContext
from trainers.loop import StopRule, fit
from trainers.paths.packed import PackedPathsTrainer
from trainers.paths.trainer import PathsConfig


def _contexts(uri, exp, parent, sender, tmp_path) -> list[TrialContext]:
    """A (retried) pack's member contexts, as run_pack_trial builds them."""
    points = [TrialPoint(f"trial_0-{i:03d}", f"m{i}", "paths", {"i": i}, i) for i in range(3)]
    runs = open_runs(uri, exp, parent, points, {}, pack_id="trial_0", sender=sender)
    end_fatal_runs(runs)
    return member_contexts(runs, points, tmp_path, tmp_path, torch.device("cpu"))


def test_a_retry_keeps_diverged_members_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "pack")
    parent = tracking.start_sweep_run(uri, exp, "sweep", {}, {})
    sender = MetricSender(uri)
    first = _contexts(uri, exp, parent, sender, tmp_path)
    assert [c.closed for c in first] == [False, False, False]
    first[1].fail("non-finite metric at step 7: train/loss = nan")  # diverged in attempt 1
    sender.flush()
    client = MlflowClient(uri)
    retry = _contexts(uri, exp, parent, sender, tmp_path)  # the pack's process died: retried
    sender.close()
    stored = client.get_run(retry[1].run.run_id)
    assert stored.info.status == "FAILED"  # reopened by the search, ended again at once
    assert stored.data.tags[tag.FATAL] == "non-finite metric at step 7: train/loss = nan"
    assert stored.data.tags[tag.ATTEMPTS] == "2"
    assert [c.closed for c in retry] == [False, True, False]
    assert {client.get_run(c.run.run_id).info.status for c in (retry[0], retry[2])} == {"RUNNING"}
    assert [c.run.run_id for c in retry] == [c.run.run_id for c in first]  # the same runs

    for context in retry[::2]:
        context.fail("diverged too")
    with pytest.raises(TrialFailure, match="diverged too"):  # the first member's reason
        _contexts(uri, exp, parent, MetricSender(uri), tmp_path)  # no member left: fails
    assert {client.get_run(c.run.run_id).info.status for c in retry} == {"FAILED"}


def test_the_loop_leaves_out_a_member_that_was_closed_before_it_started(tmp_path):
    configs = [PathsConfig(order=2, width=8, lr=0.01) for _ in range(3)]
    ctx = LocalContext.packed(tmp_path / "pack", 3)
    ctx.members[1].closed = True
    fit(PackedPathsTrainer(configs, [0, 1, 2]), ctx, LOOP, StopRule(iterations=10))
    assert ctx.members[1].metrics == [] and ctx.members[1].failure is None
    assert ctx.members[0].metrics and ctx.members[2].metrics
    assert ctx.reports[-1][1]["pack/live_members"] == 2
    for member in ctx.members:
        member.closed = True
    with pytest.raises(TrialFailure, match="every member"):
        fit(PackedPathsTrainer(configs, [0, 1, 2]), ctx, LOOP, StopRule(iterations=10))
