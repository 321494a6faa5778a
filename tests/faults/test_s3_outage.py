"""The S3 server that holds a sweep's storage unreachable for 30 s while trials upload
checkpoints (moto's server SIGSTOPped, then SIGCONTed: connections hang, as in a network
partition, and the server keeps its objects)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import history, store, sweep_runs, wait_for, write_config
from tests.services import S3_ENV, pause_s3, s3_objects, s3_server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]

BUCKET, STEPS, CHECKPOINT_EVERY, OUTAGE_S = "dynsweep", 120, 10, 30


def step_of(workdir, seed: int) -> int:
    try:
        return json.loads((workdir / f"progress-{seed}.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_s3_unreachable_for_30_s_during_checkpoint_uploads(workdir, ray_session):
    with s3_server(BUCKET) as endpoint:
        # The tests' Ray workers were started without AWS_* variables: the (fake) keys travel
        # in the URI, so in the filesystem that Tune hands to the trials.
        keys = f"{S3_ENV['AWS_ACCESS_KEY_ID']}:{S3_ENV['AWS_SECRET_ACCESS_KEY']}"
        storage = f"s3://{keys}@{BUCKET}/sweeps?endpoint_override={endpoint[7:]}&scheme=http"
        cfg = write_config(
            workdir,
            trainer="flaky",
            config={
                "fail_at": 10**6,
                "marker_dir": str(workdir),
                "step_sleep_s": 0.05,
            },
            seed={"grid": [0, 1]},
            stop={"iterations": STEPS},
            loop={"checkpoint_every": CHECKPOINT_EVERY, "report_every": 5},
            storage=storage,
        )
        address = ray_session.get_runtime_context().gcs_address
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--address", address],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            reached = 2 * CHECKPOINT_EVERY + 2
            wait_for(lambda: proc.poll() is not None or step_of(workdir, 0) >= reached, 120, "")
            assert proc.poll() is None, proc.communicate()[0]
            at = {s: step_of(workdir, s) for s in (0, 1)}
            pause_s3(endpoint, OUTAGE_S)
            after = {s: step_of(workdir, s) for s in (0, 1)}
            print(f"outage from steps {at} to {after}, {time.monotonic() - started:.0f} s in")
            out, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        print(out[-6000:])
        print(f"driver exit {proc.returncode} after {time.monotonic() - started:.0f} s")
        keys = s3_objects(endpoint, BUCKET, "sweeps/")

    client = store(workdir)
    _, children = sweep_runs(client)
    for c in children:
        print(c.info.run_name, c.info.status, c.data.tags.get("dynsweep.attempts"),
              c.data.tags.get("dynsweep.error"))  # fmt: skip
    assert proc.returncode == 0, out
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
    trials: dict[str, set[str]] = {}
    for key in keys:
        trial, sep, rest = key.partition("/checkpoint_")
        if sep:
            trials.setdefault(trial, set()).add(rest.split("/")[0])
    assert len(trials) == 2, keys
    assert all(len(c) == STEPS // CHECKPOINT_EVERY for c in trials.values()), trials
