"""The plain and the packed trial contexts report through one path (``ContextBase``): the
latest value of every metric, the sweep's metrics as NaN until known, the metrics stored
before a checkpoint, the checkpoint file named for the rank, then the send; ``finish`` keeps,
ends, then reports."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from ray import tune

from orchestrator.context import ContextBase, TrialContext
from orchestrator.packing import PackContext
from trainers.base import FitResult
from trainers.distributed import Parallel


class FakeSender:
    """Stands for a MetricSender: records flushes and closes in ``events``."""

    def __init__(self, events: list) -> None:
        self.events = events

    def flush(self) -> None:
        self.events.append("flush")

    def close(self) -> None:
        self.events.append("close")


@pytest.fixture
def reports(monkeypatch) -> list:
    """Every ``tune.report``: ("report", result, {file name: checkpoint contents} or None)."""
    events: list = []

    def report(result, checkpoint=None):
        files = None
        if checkpoint is not None:
            folder = Path(checkpoint.path)
            files = {p.name: torch.load(p, weights_only=True) for p in folder.iterdir()}
        events.append(("report", result, files))

    monkeypatch.setattr(tune, "report", report)
    return events


def plain(tmp_path, rank: int = 0) -> TrialContext:
    header = {"trial_id": "t1", "run_id": "r1", "origins": ["o"]}
    parallel = Parallel(world_size=2, rank=rank) if rank else Parallel()
    return TrialContext(None, 0, tmp_path, tmp_path, header, parallel=parallel)


def packed(tmp_path, events: list) -> PackContext:
    members = [
        TrialContext(None, i, tmp_path, tmp_path, {"run_id": f"m{i}"}, closed=True)
        for i in range(2)
    ]
    header = {"trial_id": "p1", "members": [m.header for m in members], "origins": []}
    cpu = torch.device("cpu")
    return PackContext(members, FakeSender(events), "uri", tmp_path, tmp_path, header, cpu)


def test_both_contexts_declare_what_train_sets():
    for cls in (TrialContext, PackContext):
        assert issubclass(cls, ContextBase)
        names = {f.name for f in dataclasses.fields(cls)}
        assert {"required", "curves", "latest", "closed"} <= names
    with pytest.raises(TypeError):
        ContextBase()  # abstract: only its subclasses are contexts


def test_a_report_carries_the_latest_metrics_and_the_required_ones_as_nan(tmp_path, reports):
    ctx = plain(tmp_path)
    ctx.required = ("val/acc", "val/loss")
    ctx.log_metrics(1, {"val/loss": 0.5})
    ctx.report(2, {"train/loss": 0.25}, None)
    ((_, result, files),) = reports
    assert files is None
    assert result["train/loss"] == 0.25 and result["val/loss"] == 0.5
    assert math.isnan(result["val/acc"])
    assert result["step"] == 2 and result["mlflow_run_id"] == "r1"
    assert result["mlflow_run_closed"] is False


@pytest.mark.parametrize("rank, name", [(0, "state.pt"), (1, "state-rank1.pt")])
def test_a_checkpoint_is_one_file_named_for_the_rank(tmp_path, reports, rank, name):
    ctx = plain(tmp_path, rank)
    loop = {"trainer": {"w": torch.ones(2)}, "step": 3, "elapsed_s": 1.0}
    ctx.report(3, {"train/loss": 0.1}, loop)
    ((_, _, files),) = reports
    assert list(files) == [name]
    state = files[name]
    assert state["trial_id"] == "t1" and state["run_id"] == "r1" and state["origins"] == ["o"]
    assert state["loop"]["step"] == 3 and torch.equal(state["loop"]["trainer"]["w"], torch.ones(2))
    assert len(state["id"]) == 32


def test_a_pack_flushes_its_members_metrics_before_a_checkpoint(tmp_path, reports):
    ctx = packed(tmp_path, reports)
    ctx.required = ("val/best_loss",)
    ctx.report(1, {"train/loss": 1.0}, None)
    ctx.report(2, {"val/best_loss": 0.5}, {"trainer": {}, "step": 2, "elapsed_s": 0.0})
    kinds = [e if isinstance(e, str) else e[0] for e in reports]
    assert kinds == ["report", "flush", "report"]  # no flush without a checkpoint
    first, last = reports[0][1], reports[2][1]
    assert math.isnan(first["val/best_loss"]) and first["mlflow_run_id"] == "m0,m1"
    assert last["train/loss"] == 1.0 and last["val/best_loss"] == 0.5  # the latest of each
    assert list(reports[2][2]) == ["state.pt"]
    assert reports[2][2]["state.pt"]["members"] == [{"run_id": "m0"}, {"run_id": "m1"}]


def test_finish_ends_before_the_last_report(tmp_path, reports):
    """A scheduler may stop the trial inside its last report: the runs end first."""
    ctx = packed(tmp_path, reports)
    result = FitResult(step=4, metrics={"train/loss": 0.2}, stop_reason="iterations")
    ctx.finish(result, {"trainer": {}, "step": 4, "elapsed_s": 0.0}, [{}, {}])
    kinds = [e if isinstance(e, str) else e[0] for e in reports]
    assert kinds == ["close", "flush", "report"]  # the sender closed, then the checkpoint
    assert ctx.closed and reports[-1][1]["mlflow_run_closed"] is True
