"""Failures inside trials: a crash is retried in the same run; a NaN fails only its trial."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.io import load_trajectory
from tests.helpers import history, run_cli, store, sweep_runs, write_config

pytestmark = pytest.mark.usefixtures("ray_session")


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
