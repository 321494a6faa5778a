"""A trial run's metric path: batching, the step watermark, and retried attempts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from orchestrator.tracking import trial_run
from orchestrator.tracking.store import STEP_TAG


def open_run(uri: str):
    exp = tracking.ensure_experiment(uri, "tr")
    parent = tracking.start_sweep_run(uri, exp, "tr", {}, {})
    return tracking.TrialRun.open(uri, exp, parent, "trial", "trial", {}, {}), exp, parent


@pytest.mark.parametrize("batch_max", [7, 25, 20_000], ids=["split-steps", "mid", "bulk"])
def test_every_point_stored_once_and_watermark_at_the_last_step(tmp_path, monkeypatch, batch_max):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run, exp, parent = open_run(uri)
    run._batch_max = batch_max  # small batches: steps split across batches
    for step in range(1, 101):
        run.log_metrics(step, {f"m{k}": step + k for k in range(10)})
    run.log_metrics(100, {"extra": 1.0})  # a second call for the same step
    run.close()
    client = MlflowClient(uri)
    for k in range(10):
        history = client.get_metric_history(run.run_id, f"m{k}")
        assert sorted(m.step for m in history) == list(range(1, 101))
        assert all(m.value == m.step + k for m in history)
    assert client.get_run(run.run_id).data.tags[STEP_TAG] == "100"

    # A retried attempt of the trial skips what was stored and continues the history.
    again = tracking.TrialRun.open(uri, exp, parent, "trial", "trial", {}, {})
    assert again.run_id == run.run_id and again.logged_step == 100
    again.log_metrics(100, {"m0": -1.0})  # already stored: dropped
    again.log_metrics(101, {"m0": 101.0})
    again.close()
    steps = [m.step for m in client.get_metric_history(run.run_id, "m0")]
    assert sorted(steps) == list(range(1, 102))


def test_watermark_never_covers_a_step_with_points_still_queued():
    run = trial_run.TrialRun.__new__(trial_run.TrialRun)
    run._pending, run._points, run._batch_max = trial_run.deque(), 0, 5
    for step, n in [(1, 3), (2, 4), (2, 2), (3, 9)]:
        run._pending.append((step, 0, {f"k{i}": 0.0 for i in range(n)}))
        run._points += n
    taken, mark = run._take()
    assert [(s, len(items)) for s, _, items in taken] == [(1, 3)] and mark == "1"
    taken, mark = run._take()
    assert [(s, len(items)) for s, _, items in taken] == [(2, 4)] and mark == "1"
    taken, mark = run._take()
    assert [(s, len(items)) for s, _, items in taken] == [(2, 2)] and mark == "2"
    taken, mark = run._take()  # a step larger than a batch is split; not complete yet
    assert [(s, len(items)) for s, _, items in taken] == [(3, 5)] and mark == "2"
    taken, mark = run._take()
    assert [(s, len(items)) for s, _, items in taken] == [(3, 4)] and mark == "3"
    assert run._points == 0
