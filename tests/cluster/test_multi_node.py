"""A sweep across Ray nodes that share no disk, with PostgreSQL and S3 behind a tracking server.

The Ray head has no CPUs, so every trial and analysis task runs on a worker node; each worker
node lives in a mount namespace where the driver's folder is an empty tmpfs. Sweep state and
checkpoints go to S3 (moto's server), runs to ``dynsweep server`` backed by PostgreSQL with
artifacts in S3. Any hidden reliance on the driver's disk fails these tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import BASE, merge, sweep_runs, wait_for
from tests.services import (
    S3_ENV,
    mlflow_server,
    postgres,
    ray_cluster,
    s3_objects,
    s3_server,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "dynsweep"
STEPS = 60


@pytest.fixture(scope="module")
def services():
    """(S3 endpoint, tracking server URI), shared by this module's tests."""
    with postgres() as db, s3_server(BUCKET) as endpoint:
        env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        with mlflow_server(db, f"s3://{BUCKET}/mlflow", env) as server:
            yield endpoint, server


@pytest.fixture
def driver_dir(tmp_path_factory) -> Path:
    """The driver's working folder (hidden from the worker nodes)."""
    return tmp_path_factory.mktemp("driver")


@pytest.fixture
def cluster(driver_dir, services):
    endpoint, _ = services
    with ray_cluster(driver_dir, ["node_a", "node_b"], {**S3_ENV}) as c:
        yield c


def experiment(folder: Path, name: str, endpoint: str, **extra) -> Path:
    spec = merge(
        BASE,
        {
            "name": name,
            "trainer": "flaky",  # the classifier, slowed down so a node can die mid-trial
            "config": {
                "fail_at": 10_000,
                # 35 steps after the tests' step-25 mark take ≥ 5 s: time to see the mark in
                # the store and kill a node while its trial still runs (at 0.05 s a step, an
                # idle machine sometimes finished the trial first)
                "step_sleep_s": 0.15,
                "optimizer": {"lr": {"grid": [0.05, 0.2]}},
                "model": {"widths": {"grid": [[8], [16]]}},
            },
            "stop": {"iterations": STEPS},
            "loop": {
                "report_every": 5,
                "checkpoint_every": 10,
                "eval_every": 30,
                "record": [{"probe": "weights"}],
            },  # fmt: skip
            "max_failures": 3,
            "storage": f"s3://{BUCKET}/sweeps?endpoint_override={endpoint[7:]}&scheme=http",
            "analysis": [{"step": "edm", "input": "train/loss", "params": {"max_E": 4}}],
            **extra,
        },
    )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dynsweep(folder: Path, *argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *argv], cwd=folder,
        env={**os.environ, **S3_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, **kwargs,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{out[-4000:]}") from None
    assert proc.returncode == 0, out[-6000:]
    return out


def wait_while_running(proc: subprocess.Popen, predicate, timeout: float, what: str) -> None:
    """Wait for ``predicate``; on a time-out (or an early exit) show the driver's output."""
    try:
        wait_for(lambda: predicate() or proc.poll() is not None, timeout, what)
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(
            f"timed out waiting for {what}:\n{proc.communicate()[0][-6000:]}"
        ) from None
    if proc.poll() is not None:
        raise AssertionError(f"the driver ended before {what}:\n{proc.communicate()[0][-6000:]}")


def running_at(client: MlflowClient, name: str, step: int, count: int, finished: int = 0) -> bool:
    """``count`` runs of the experiment are RUNNING with metrics stored up to ``step``, and
    ``finished`` runs are FINISHED."""
    if client.get_experiment_by_name(name) is None:
        return False
    _, children = sweep_runs(client, name)
    logged = [
        int(c.data.tags.get("dynsweep.logged_step", "-1"))
        for c in children
        if c.info.status == "RUNNING"
    ]
    done = sum(c.info.status == "FINISHED" for c in children)
    return sum(s >= step for s in logged) >= count and done >= finished


def _error(text: str | None) -> str | None:
    """A run's error, with Tune's error file (on the head) when it names one."""
    if text and text.rstrip().endswith("error.txt") and Path(text.split()[-1]).is_file():
        return text + "\n" + Path(text.split()[-1]).read_text()[-3000:]
    return text


def check_runs(client: MlflowClient, name: str) -> list:
    """Four FINISHED trials, each metric step stored once and its weights readable."""
    parents, children = sweep_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    errors = {c.info.run_name: _error(c.data.tags.get("dynsweep.error")) for c in children}
    assert {c.info.status for c in children} == {"FINISHED"}, f"all FINISHED: {errors}"
    for c in children:
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "train/loss"))
        assert steps == list(range(1, STEPS + 1)), f"{c.info.run_name}: {steps}"
        assert c.info.artifact_uri.startswith("mlflow-artifacts:"), c.info.artifact_uri
    return children


READ_ELSEWHERE = """
import json, sys
from analysis.io import load_trajectory
traj = load_trajectory(sys.argv[2], "weights", uri=sys.argv[1])
print(json.dumps([int(traj.steps[0]), int(traj.steps[-1]), len(traj.steps)]))
"""


def read_trajectory_elsewhere(hidden: Path, server: str, run_id: str, cache: Path) -> list:
    """``load_trajectory`` in a process that sees none of the driver's (nor a node's) files."""
    script = f'mount -t tmpfs tmpfs {hidden} && exec "$@"'
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, "-c", READ_ELSEWHERE, server, run_id],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **S3_ENV, "DYNSWEEP_CACHE": str(cache)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return yaml.safe_load(out.stdout.strip().splitlines()[-1])


def test_a_lost_worker_node_and_analysis_on_the_workers(services, cluster, driver_dir, tmp_path):
    endpoint, server = services
    client = MlflowClient(server)
    cfg = experiment(driver_dir, "nodeloss", endpoint)
    proc = dynsweep(driver_dir, "sweep", str(cfg), "--address", cluster.address,
                    "--tracking-uri", server, "--no-analyze")  # fmt: skip
    # Both nodes busy, past a checkpoint: lose one of them.
    wait_while_running(
        proc, lambda: running_at(client, "nodeloss", 25, 2), 300, "two trials past step 25"
    )
    cluster.kill_worker("node_b")
    out = finish(proc)

    children = check_runs(client, "nodeloss")
    retried = [c for c in children if int(c.data.tags["dynsweep.attempts"]) > 1]
    assert retried, f"no trial was retried after node_b was lost:\n{out[-3000:]}"
    # Sweep state and checkpoints are in S3, and nothing went to the driver's folder.
    keys = s3_objects(endpoint, BUCKET, "sweeps/nodeloss-")
    assert any(k.endswith("/dynsweep_sweep.json") for k in keys)
    assert any("/experiment_state-" in k for k in keys)
    assert any(k.endswith("/state.pt") for k in keys)
    assert any(k.startswith("mlflow/") for k in s3_objects(endpoint, BUCKET, "mlflow/"))
    local = {p.name for p in driver_dir.iterdir()}
    assert not local & {"mlartifacts", "mlruns", "dynsweep_runs", "mlflow.db"}, local

    steps = read_trajectory_elsewhere(driver_dir, server, retried[0].info.run_id, tmp_path)
    assert steps == [0, STEPS, STEPS + 1], "weights of every step, contiguous, once"

    # Analysis fans out as Ray tasks; the head has no CPUs, so they run on the worker node.
    analyze = dynsweep(driver_dir, "analyze", str(cfg), "--address", cluster.address,
                       "--tracking-uri", server)  # fmt: skip
    finish(analyze)
    for c in sweep_runs(client, "nodeloss")[1]:
        assert 1 <= c.data.metrics["analysis/edm/best_E"] <= 4


def test_a_killed_driver_resumes_from_object_storage(services, cluster, driver_dir, tmp_path):
    endpoint, server = services
    client = MlflowClient(server)
    cfg = experiment(driver_dir, "driverloss", endpoint)
    proc = dynsweep(driver_dir, "sweep", str(cfg), "--address", cluster.address,
                    "--tracking-uri", server, "--no-analyze")  # fmt: skip
    wait_while_running(
        proc,
        lambda: running_at(client, "driverloss", 25, 1, finished=1),
        300,
        "a finished trial and a running one past step 25",
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    keys = s3_objects(endpoint, BUCKET, "sweeps/driverloss-")
    [manifest] = [k for k in keys if k.endswith("/dynsweep_sweep.json")]
    sweep_uri = (
        f"s3://{BUCKET}/{manifest.rsplit('/', 1)[0]}?endpoint_override={endpoint[7:]}&scheme=http"
    )
    before = {c.info.run_id: c for c in sweep_runs(client, "driverloss")[1]}

    # A fresh process in another folder, which has never seen the first driver's files.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    finish(dynsweep(elsewhere, "resume", sweep_uri, "--address", cluster.address))

    children = check_runs(client, "driverloss")  # one run per trial, all FINISHED
    assert set(before) <= {c.info.run_id for c in children}, "the started trials kept their runs"
    finished = [c for c in before.values() if c.info.status == "FINISHED"]
    assert finished
    now = {c.info.run_id: c for c in children}
    for old in finished:  # finished before the kill: not trained again
        c = now[old.info.run_id]
        assert c.info.end_time == old.info.end_time
        assert c.data.tags["dynsweep.attempts"] == old.data.tags["dynsweep.attempts"]
    weights = read_trajectory_elsewhere(driver_dir, server, children[0].info.run_id, tmp_path)
    assert weights == [0, STEPS, STEPS + 1]


def test_a_sqlite_store_is_refused_on_several_nodes(services, cluster, driver_dir):
    endpoint, _ = services
    cfg = experiment(driver_dir, "refused", endpoint)
    proc = dynsweep(driver_dir, "sweep", str(cfg), "--address", cluster.address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "tracking.uri" in out and "2 nodes" in out and "dynsweep server" in out, out
    assert "Traceback" not in out
    assert not s3_objects(endpoint, BUCKET, "sweeps/refused-")
    assert not (driver_dir / "mlflow.db").exists()
