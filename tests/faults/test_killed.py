"""Killed processes: a trial's worker, the sweep driver, a distributed worker (SIGKILL, no
chance to clean up). Nothing logged is lost, nothing is logged twice, one run per trial."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.io import load_trajectory
from orchestrator.checkpoints import on_disk
from tests.helpers import (
    history,
    merge,
    run_cli,
    start_driver,
    store,
    sweep_runs,
    wait_for,
    wait_for_progress,
    write_config,
)
from tests.test_distributed import diffusion_sweep

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]

STEPS, CHECKPOINT_EVERY = 100, 20


def slow_sweep(workdir, **extra):
    """Trials of the ``flaky`` classifier that sleep each step and report their pid/step."""
    fields = dict(
        trainer="flaky",
        config={"fail_at": 10**6, "marker_dir": str(workdir), "step_sleep_s": 0.04},
        stop={"iterations": STEPS},
        loop={"checkpoint_every": CHECKPOINT_EVERY, "record": [{"probe": "weights"}]},
    )
    return write_config(workdir, **merge(fields, extra))


def progress(workdir) -> dict:
    try:
        return json.loads((workdir / "progress-0.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_complete(client, run) -> None:
    """Every step once in the metric history; the weight trajectory readable, contiguous."""
    steps = history(client, run.info.run_id, "train/loss")
    assert sorted(steps) == list(range(1, STEPS + 1)), run.info.run_name
    traj = load_trajectory(run.info.run_id, "weights", uri=client.tracking_uri)
    np.testing.assert_array_equal(traj.steps, np.arange(STEPS + 1))
    assert np.isfinite(traj.values).all()


def resumed_from(client, run) -> list[int]:
    """The checkpoint steps later attempts of ``run`` resumed from (attempt markers)."""
    folder = client.download_artifacts(run.info.run_id, "trajectories/weights")
    return [
        json.loads(open(os.path.join(folder, name)).read())["resumed_from"]
        for name in sorted(os.listdir(folder))
        if name.startswith("attempt-")
    ]


def test_sigkilled_trial_is_retried_from_its_checkpoint_in_the_same_run(workdir, ray_session):
    # A kill step drawn anew each run (a different interleaving of kill and checkpoints each
    # time), from a seed that is printed, so a failure can be repeated with DYNSWEEP_KILL_SEED.
    seed = int(os.environ.get("DYNSWEEP_KILL_SEED", random.randrange(2**32)))
    kill_at = random.Random(seed).randint(CHECKPOINT_EVERY + 1, STEPS - 15)
    print(f"kill step {kill_at} (DYNSWEEP_KILL_SEED={seed})")
    cfg = slow_sweep(workdir, max_failures=2)
    proc = start_driver(workdir, cfg, ray_session.get_runtime_context().gcs_address)
    try:
        seen = wait_for(
            lambda: progress(workdir).get("step", 0) >= kill_at and progress(workdir),
            120,
            f"step {kill_at}",
        )
        os.kill(seen["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert not pid_alive(seen["pid"])
    assert progress(workdir)["pid"] != seen["pid"]  # the retry ran in a new process

    client = store(workdir)
    _, children = sweep_runs(client)
    assert len(children) == 1, "one MLflow run for the trial, whatever its attempts"
    run = children[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dynsweep.attempts"] == "2"
    assert_complete(client, run)
    # The retry continued from the last checkpoint before the kill (not from scratch).
    [start] = resumed_from(client, run)
    assert 0 < start <= seen["step"] and start % CHECKPOINT_EVERY == 0, (start, seen)


def test_sigkilled_driver_is_finished_by_resume_past_a_truncated_checkpoint(workdir, ray_session):
    cfg = slow_sweep(
        workdir,
        config={"optimizer": {"lr": {"grid": [0.01, 0.02, 0.05, 0.1]}}},
        max_concurrent_trials=1,
    )
    proc = start_driver(workdir, cfg, ray_session.get_runtime_context().gcs_address)
    client = store(workdir)
    try:
        wait_for_progress(client, finished=2, step=51)
        victim = progress(workdir)["pid"]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # Ray ends the dead driver's trial processes; wait until the running trial's one is gone.
    wait_for(lambda: not pid_alive(victim), 60, "the killed driver's trial to stop")

    parents, children = sweep_runs(client)
    before = {c.info.run_id: c for c in children}
    finished_before = {i for i, c in before.items() if c.info.status == "FINISHED"}
    [interrupted] = [c for c in children if c.info.status == "RUNNING"]  # nobody could end it
    # As if the kill had hit while a checkpoint was being written: its newest one is truncated.
    sweep_dir = Path(parents[0].data.tags["dynsweep.sweep_dir"])
    newest = Path(on_disk(str(sweep_dir), interrupted.data.tags["dynsweep.trial_id"])[1][0])
    newest.write_bytes(newest.read_bytes()[:100])

    assert run_cli("resume", str(sweep_dir)) == 0

    parents, children = sweep_runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4, "no duplicate runs"
    assert {c.info.status for c in children} == {"FINISHED"}, "no run left RUNNING"
    for c in children:
        assert_complete(client, c)
        if c.info.run_id in finished_before:  # not re-run
            assert c.data.tags["dynsweep.attempts"] == "1"
            assert c.info.end_time == before[c.info.run_id].info.end_time
    resumed = next(c for c in children if c.info.run_id == interrupted.info.run_id)
    assert resumed.data.tags["dynsweep.attempts"] == "2"  # continued in the same run
    assert f"{newest}: unreadable checkpoint" in resumed.data.tags["dynsweep.warning"]
    assert resumed_from(client, resumed)[0] >= CHECKPOINT_EVERY  # from the one before it


def test_sigkilled_distributed_worker_restarts_the_group_in_the_same_run(ray_session, workdir):
    path = diffusion_sweep(workdir, {"workers": 2, "cpus_per_worker": 1})
    spec = yaml.safe_load(path.read_text())
    spec["trainer"] = "flaky_diffusion"
    spec["config"].update(fail_at=8, marker_dir=str(workdir))
    path.write_text(yaml.safe_dump(spec))
    assert run_cli("sweep", str(path)) == 0
    assert (workdir / "worker-killed").exists()  # the rank-1 process really was SIGKILLed
    client = store(workdir)
    _, children = sweep_runs(client)
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["dynsweep.attempts"]) >= 3  # the driver + two worker groups
    # Steps 7.. were redone after the restart from step 6, but each is logged once.
    assert history(client, run.info.run_id, "train/loss") == list(range(1, 13))
    trajectory = load_trajectory(run.info.run_id, "weights", uri=client.tracking_uri)
    assert list(trajectory.steps) == [0, 3, 6, 9, 12]
