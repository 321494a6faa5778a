"""The S3 server that holds a sweep's storage unreachable while trials upload checkpoints
(moto's server SIGSTOPped, then SIGCONTed: connections hang, as in a network partition, and the
server keeps its objects, which it holds in memory only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import history, store, sweep_runs, wait_for, write_config
from tests.services import S3_ENV, pause_s3, s3_objects, s3_server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]

BUCKET, STEPS, CHECKPOINT_EVERY = "dynsweep", 120, 10


def step_of(workdir, seed: int) -> int:
    try:
        return json.loads((workdir / f"progress-{seed}.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def sweep_through_outage(workdir, ray_session, outage_s: float, env=None, **extra):
    """Two ``flaky`` trials (seeds 0 and 1) with storage on S3, the server unreachable for
    ``outage_s`` once trial 0 passed its second checkpoint; returns (driver exit status, its
    output, steps at the outage's start and end, S3 keys of the sweep storage)."""
    with s3_server(BUCKET) as endpoint:
        # The tests' Ray workers were started without AWS_* variables: the (fake) keys travel
        # in the URI, so in the filesystem that Tune hands to the trials.
        keys = f"{S3_ENV['AWS_ACCESS_KEY_ID']}:{S3_ENV['AWS_SECRET_ACCESS_KEY']}"
        storage = f"s3://{keys}@{BUCKET}/sweeps?endpoint_override={endpoint[7:]}&scheme=http"
        cfg = write_config(
            workdir,
            trainer="flaky",
            config={"fail_at": 10**6, "marker_dir": str(workdir), "step_sleep_s": 0.05},
            seed={"grid": [0, 1]},
            stop={"iterations": STEPS},
            loop={"checkpoint_every": CHECKPOINT_EVERY, "report_every": 5},
            storage=storage,
            **extra,
        )
        address = ray_session.get_runtime_context().gcs_address
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--address", address],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            reached = 2 * CHECKPOINT_EVERY + 2
            wait_for(lambda: proc.poll() is not None or step_of(workdir, 0) >= reached, 120, "")
            assert proc.poll() is None, proc.communicate()[0]
            at = {s: step_of(workdir, s) for s in (0, 1)}
            pause_s3(endpoint, outage_s)
            after = {s: step_of(workdir, s) for s in (0, 1)}
            print(f"outage from steps {at} to {after}, {time.monotonic() - started:.0f} s in")
            out, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        print(out[-4000:])
        print(f"driver exit {proc.returncode} after {time.monotonic() - started:.0f} s")
        return proc.returncode, out, at, after, s3_objects(endpoint, BUCKET, "sweeps/")


def checkpoints(keys: list[str]) -> dict[str, set[str]]:
    """The checkpoint folders in S3, by trial folder."""
    trials: dict[str, set[str]] = {}
    for key in keys:
        trial, sep, rest = key.partition("/checkpoint_")
        if sep:
            trials.setdefault(trial, set()).add(rest.split("/")[0])
    return trials


def test_s3_unreachable_for_30_s_during_checkpoint_uploads(workdir, ray_session):
    rc, out, at, after, keys = sweep_through_outage(workdir, ray_session, 30)
    client = store(workdir)
    _, children = sweep_runs(client)
    assert rc == 0, out
    # Training waited for the upload (the checkpoint after the outage began) while S3 was away.
    assert all(after[s] <= at[s] + CHECKPOINT_EVERY for s in at), (at, after)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        # Not failed and retried (before: the upload gave up after ~10 s, the trial failed and
        # Tune restarted it from the previous checkpoint, dynsweep.attempts = 2).
        assert c.data.tags["dynsweep.attempts"] == "1", c.data.tags
        assert "dynsweep.error" not in c.data.tags, c.data.tags
        steps = history(client, c.info.run_id, "train/loss")
        assert sorted(steps) == list(range(1, STEPS + 1)), c.info.run_name  # each once
    # Every checkpoint is in S3 (object storage keeps them all), those after the outage too.
    trials = checkpoints(keys)
    assert len(trials) == 2, keys
    assert all(len(c) == STEPS // CHECKPOINT_EVERY for c in trials.values()), trials


def test_s3_unreachable_for_longer_than_its_timeouts_fails_the_trial_clearly(workdir, ray_session):
    # S3 requests given up after 1 s without a byte (3 tries), no trial retry: the outage
    # outlasts what the sweep waits for.
    rc, out, at, after, keys = sweep_through_outage(
        workdir, ray_session, 12, env={"DYNSWEEP_S3_STALL_S": "1"}, max_failures=0
    )
    client = store(workdir)
    _, children = sweep_runs(client)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert failed, [(c.info.run_name, c.info.status) for c in children]
    for c in failed:
        error = c.data.tags["dynsweep.error"]
        assert "the S3 storage s3://testing:***@dynsweep/sweeps/t-" in error, error
        assert "testing:testing" not in error, error  # the URI's secret key is masked
        assert "dynsweep resume s3://" in error and "already stored is kept" in error, error
        # What was logged before the failure is kept, each step once.
        steps = history(client, c.info.run_id, "train/loss")
        assert steps and sorted(steps) == list(range(1, max(steps) + 1)), c.info.run_name
    # The checkpoints stored before the outage are still there (Tune numbers them from 0).
    trials = checkpoints(keys)
    assert len(trials) == 2 and all("000000" in c for c in trials.values()), trials
