"""Failures inside trials: a crash is retried in the same run; a NaN fails only its trial."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.io import load_trajectory
from tests.helpers import history, run_cli, store, sweep_runs, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]


def test_crashed_trial_is_retried_from_its_checkpoint_in_the_same_run(workdir):
    cfg = write_config(
        workdir,
        trainer="flaky",
        max_failures=1,
        config={"fail_at": 35, "marker_dir": str(workdir)},
        loop={"record": [{"probe": "weights"}]},
        stop={"iterations": 50},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    _, children = sweep_runs(client)
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dynsweep.attempts"] == "2"
    assert (workdir / "failed-0").exists()  # the failure really happened
    steps = history(client, run.info.run_id, "train/loss")
    assert sorted(steps) == list(range(1, 51))  # every step once: none lost, none twice
    traj = load_trajectory(run.info.run_id, "weights", uri=client.tracking_uri)
    np.testing.assert_array_equal(traj.steps, np.arange(51))
    files = {
        a.path.rsplit("/", 1)[-1]
        for a in client.list_artifacts(run.info.run_id, "trajectories/weights")
    }
    assert "attempt-001.json" in files  # the retry resumed (from step 20), it did not restart


def test_nan_loss_fails_that_trial_with_the_reason_and_the_others_finish(workdir):
    cfg = write_config(
        workdir, max_failures=2, config={"optimizer": {"lr": {"grid": [0.05, 1.0e30]}}}
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    parents, children = sweep_runs(client)
    by_lr = {c.data.params["config.optimizer.lr"]: c for c in children}
    assert by_lr["0.05"].info.status == "FINISHED"
    failed = by_lr["1e+30"]
    assert failed.info.status == "FAILED"
    assert "non-finite metric at step" in failed.data.tags["dynsweep.error"]
    assert "train/loss = " in failed.data.tags["mlflow.note.content"]
    steps = history(client, failed.info.run_id, "train/loss")
    assert len(steps) == len(set(steps))  # retries failed at once: nothing logged twice
    assert parents[0].info.status == "FINISHED"


def test_exception_in_a_trainer_fails_that_trial_with_the_reason(workdir):
    cfg = write_config(
        workdir,
        trainer="flaky",
        max_failures=1,
        config={"fail_at": 10**6, "marker_dir": str(workdir), "raise_at": {"grid": [0, 7]}},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    parents, children = sweep_runs(client)
    by_raise = {c.data.params["config.raise_at"]: c for c in children}
    assert by_raise["0"].info.status == "FINISHED"
    failed = by_raise["7"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["dynsweep.attempts"] == "2"  # retried once, failed again
    assert failed.data.tags["dynsweep.error"] == "ValueError: injected bug at step 7"
    assert failed.data.tags["mlflow.note.content"] == "ValueError: injected bug at step 7"
    assert history(client, failed.info.run_id, "train/loss") == list(range(1, 7))
    assert parents[0].info.status == "FINISHED"


def test_full_disk_stops_the_trial_with_the_file_and_keeps_its_metrics(workdir):
    # Each weight row is 1,210 float32 values (4,840 bytes): chunks of 16 rows are 77 KB, so
    # the second chunk (steps 16-31) meets the full disk.
    cfg = write_config(
        workdir,
        trainer="flaky",
        config={"fail_at": 10**6, "marker_dir": str(workdir), "disk_quota_bytes": 100_000},
        loop={"record": [{"probe": "weights"}], "checkpoint_every": 100},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    [run] = sweep_runs(client)[1]
    assert run.info.status == "FAILED"
    error = run.data.tags["dynsweep.error"]
    assert "No space left on device" in error and "trajectories/weights/c" in error, error
    assert run.data.tags["dynsweep.fatal"] == error  # Tune's retries fail at once, untrained
    steps = history(client, run.info.run_id, "train/loss")
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 31  # every step kept
    traj = load_trajectory(run.info.run_id, "weights", uri=client.tracking_uri)
    np.testing.assert_array_equal(traj.steps, np.arange(16))  # the chunk that was written


def test_a_sweep_over_the_recording_budget_is_refused_before_anything_starts(
    workdir, capsys, no_ray
):
    cfg = write_config(
        workdir,
        stop={"iterations": 10**6},
        loop={"record": [{"probe": "weights"}], "record_budget_gb": 1},
    )
    assert run_cli("sweep", str(cfg)) == 2
    err = capsys.readouterr().err
    assert "loop.record: this sweep would record about 4.8 GB" in err
    assert "Traceback" not in err
    assert not (workdir / "mlflow.db").exists() and not (workdir / "dynsweep_runs").exists()
