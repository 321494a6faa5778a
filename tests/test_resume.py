"""An interrupted sweep (Ctrl+C on the `dynsweep sweep` process) continued by `dynsweep resume`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from analysis.io import load_trajectory
from tests.helpers import history, run_cli, store, sweep_runs, wait_for, write_config

pytestmark = pytest.mark.usefixtures("ray_session")


def test_resume_runs_only_what_was_unfinished(workdir, ray_session):
    cfg = write_config(
        workdir,
        config={"optimizer": {"lr": {"grid": [0.01, 0.02, 0.05, 0.1]}}},
        max_concurrent_trials=1,
        stop={"iterations": 600},
        loop={"checkpoint_every": 50, "record": [{"probe": "weights"}]},
    )
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--address", address],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The manifest is written once the sweep has created its MLflow store and parent run.
        wait_for(lambda: list(workdir.glob("dynsweep_runs/*/dynsweep_sweep.json")), 60, "sweep")
        client = store(workdir)

        def two_done_and_third_checkpointed():
            _, children = sweep_runs(client)
            done = [c for c in children if c.info.status == "FINISHED"]
            running = [c for c in children if c.info.status == "RUNNING"]
            return (
                len(done) == 2
                and running
                and int(running[0].data.tags.get("dynsweep.logged_step", "-1")) >= 100
            )

        wait_for(two_done_and_third_checkpointed, 120, "two finished trials")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Continue with:  dynsweep resume" in out

    parents, children = sweep_runs(client)
    assert parents[0].info.status == "KILLED"
    before = {c.info.run_id: c for c in children}
    finished_before = {i for i, c in before.items() if c.info.status == "FINISHED"}
    killed = [c for c in children if c.info.status == "KILLED"]
    assert len(finished_before) == 2 and len(killed) == 1
    sweep_dir = parents[0].data.tags["dynsweep.sweep_dir"]

    assert run_cli("resume", sweep_dir) == 0

    parents, children = sweep_runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        steps = history(client, c.info.run_id, "train/loss")
        assert sorted(steps) == list(range(1, 601)), c.info.run_name  # none lost, none twice
        if c.info.run_id in finished_before:  # not re-run
            assert c.data.tags["dynsweep.attempts"] == "1"
            assert c.info.end_time == before[c.info.run_id].info.end_time
    resumed = next(c for c in children if c.info.run_id == killed[0].info.run_id)
    assert resumed.data.tags["dynsweep.attempts"] == "2"  # continued in the same run
    traj = load_trajectory(resumed.info.run_id, "weights", uri=client.tracking_uri)
    np.testing.assert_array_equal(traj.steps, np.arange(601))
    assert os.path.isdir(sweep_dir)
