"""An interrupted sweep (Ctrl+C on the `dynsweep sweep` process) continued by `dynsweep resume`."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from analysis.io import load_trajectory
from tests.helpers import (
    history,
    run_cli,
    start_driver,
    store,
    sweep_runs,
    wait_for_progress,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]


def test_resume_runs_only_what_was_unfinished(workdir, ray_session):
    cfg = write_config(
        workdir,
        config={"optimizer": {"lr": {"grid": [0.01, 0.02, 0.05, 0.1]}}},
        max_concurrent_trials=1,
        stop={"iterations": 600},
        loop={"checkpoint_every": 50, "record": [{"probe": "weights"}]},
    )
    address = ray_session.get_runtime_context().gcs_address
    proc = start_driver(workdir, cfg, address)
    client = store(workdir)
    try:
        wait_for_progress(client, finished=2, step=100, timeout=120)
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
