"""A trial run's metric path: batching, the step watermark, and retried attempts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import tracking
from tracking import sender as sender_module


def open_run(uri: str):
    exp = tracking.ensure_experiment(uri, "tr")
    parent = tracking.start_sweep_run(uri, exp, "tr", {}, {})
    return tracking.TrialRun.open(uri, exp, parent, "trial", "trial", {}, {}), exp, parent


@pytest.mark.parametrize("batch_max", [7, 25, 20_000], ids=["split-steps", "mid", "bulk"])
def test_every_point_stored_once_and_watermark_at_the_last_step(tmp_path, monkeypatch, batch_max):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run, exp, parent = open_run(uri)
    run.sender._batch_max = batch_max  # small batches: steps split across batches
    for step in range(1, 101):
        run.log_metrics(step, {f"m{k}": step + k for k in range(10)})
    run.log_metrics(100, {"extra": 1.0})  # a second call for the same step
    run.close()
    client = MlflowClient(uri)
    for k in range(10):
        history = client.get_metric_history(run.run_id, f"m{k}")
        assert sorted(m.step for m in history) == list(range(1, 101))
        assert all(m.value == m.step + k for m in history)
    assert client.get_run(run.run_id).data.tags["dynsweep.logged_step"] == "100"

    # A retried attempt of the trial skips what was stored and continues the history.
    again = tracking.TrialRun.open(uri, exp, parent, "trial", "trial", {}, {})
    assert again.run_id == run.run_id and again.logged_step == 100
    again.log_metrics(100, {"m0": -1.0})  # already stored: dropped
    again.log_metrics(101, {"m0": 101.0})
    again.close()
    steps = [m.step for m in client.get_metric_history(run.run_id, "m0")]
    assert sorted(steps) == list(range(1, 102))


def test_watermark_never_covers_a_step_with_points_still_queued():
    sender = sender_module.MetricSender.__new__(sender_module.MetricSender)
    sender._pending, sender._points, sender._batch_max = sender_module.deque(), 0, 5
    sender._queued = {}
    for step, n in [(1, 3), (2, 4), (2, 2), (3, 9)]:
        sender._pending.append(("r", step, 0, {f"k{i}": 0.0 for i in range(n)}))
        sender._queued["r", step] = sender._queued.get(("r", step), 0) + 1
        sender._points += n

    def take():
        taken, marks = sender._take()
        return [step for step, _, values in taken["r"] for _ in values], marks["r"]

    assert take() == ([1] * 3, "1")
    assert take() == ([2] * 4, "1")
    assert take() == ([2] * 2, "2")
    assert take() == ([3] * 5, "2")  # a step larger than a batch is split; not complete yet
    assert take() == ([3] * 4, "3")
    assert sender._points == 0 and not sender._queued


def test_runs_sharing_a_sender_each_get_their_own_points_and_watermark(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "tr")
    parent = tracking.start_sweep_run(uri, exp, "tr", {}, {})
    shared = sender_module.MetricSender(uri)
    shared._batch_max = 7
    runs = [
        tracking.TrialRun.open(uri, exp, parent, f"t{i}", f"t{i}", {}, {}, sender=shared)
        for i in range(3)
    ]
    for step in range(1, 21):
        for i, run in enumerate(runs):
            run.log_metrics(step, {"m": 100 * i + step, "n": -step})
    for run in runs:
        run.close()
    shared.close()
    client = MlflowClient(uri)
    for i, run in enumerate(runs):
        history = client.get_metric_history(run.run_id, "m")
        assert sorted((m.step, m.value) for m in history) == [
            (s, 100 * i + s) for s in range(1, 21)
        ]
        assert client.get_run(run.run_id).data.tags["dynsweep.logged_step"] == "20"


def test_learning_curves_group_splits_of_a_metric_in_one_panel():
    import io

    import numpy as np
    from PIL import Image

    from orchestrator.figures import learning_curves, panels

    assert panels(["val/acc", "train/loss", "val/loss", "train/acc", "lr"]) == {
        "acc": ["train/acc", "val/acc"],
        "loss": ["train/loss", "val/loss"],
        "lr": ["lr"],
    }
    steps = np.arange(1, 101)
    png = learning_curves(
        {"train/loss": (steps, 1 / steps), "val/loss": (steps[::20], 1 / steps[::20])}, "t"
    )
    assert Image.open(io.BytesIO(png)).size == (460, 340)


def test_sweep_progress_table_counts_trials_steps_and_eta(capsys):
    from types import SimpleNamespace

    from dynsweep.progress import Bar, eta
    from orchestrator.progress import SweepProgress

    progress = SweepProgress("val/acc", total_trials=4, steps_per_trial=100, live=False)
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    progress.on_trial_start(0, [], a)
    progress.on_trial_result(0, [], a, {"step": 50, "val/acc": 0.5})
    progress.on_trial_start(0, [], b)
    progress.on_trial_complete(0, [], b)
    table = progress.render()
    assert "1 finished, 0 failed, 1 running, 2 pending of 4" in table
    assert "steps 150/400" in table
    assert capsys.readouterr().out.startswith("[1/4] ")  # not a terminal: one line per trial
    assert eta(100, 400, 10.0) == "00:00:30" and eta(0, 400, 1.0) == "-"
    with Bar("analysis", 3, live=False) as bar:
        for _ in range(3):
            bar.update()
    assert capsys.readouterr().err.startswith("analysis: 3/3 done in ")
