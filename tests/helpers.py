"""Helpers for tests that run real sweeps and read the MLflow store back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from orchestrator import cli

BASE: dict[str, Any] = {
    "name": "t",
    "trainer": "classifier",
    "config": {"batch_size": 32, "model": {"widths": [16]}},
    "metric": "val/acc",
    "mode": "max",
    "stop": {"iterations": 40},
    "loop": {"report_every": 5, "checkpoint_every": 20, "eval_every": 20, "chunk_steps": 16},
    "resources": {"cpus": 1},
    "max_concurrent_trials": 2,
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_config(folder: Path, **extra) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, extra)))
    return path


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


def store(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def sweep_runs(client: MlflowClient, experiment: str = "t"):
    """(parent runs, child runs) of an experiment."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("dynsweep.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    """Steps of a metric's history, in logging order."""
    return [m.step for m in client.get_metric_history(run_id, key)]


def steps_of(client: MlflowClient, run_id: str, key: str) -> np.ndarray:
    return np.array(sorted(history(client, run_id, key)))


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


@contextmanager
def tracking_server(folder: Path):
    """``dynsweep server`` on a free port of 127.0.0.1 (its store and artifacts in ``folder``);
    yields its URI."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server-artifacts")],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", 90)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def start_driver(
    folder: Path, cfg: Path, address: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``dynsweep sweep CFG`` as its own process (to be interrupted or killed), joined to the
    tests' Ray instance, with ``env`` added to its environment; waits until the sweep has its
    MLflow store and manifest."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--address", address],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    wait_for(lambda: list(folder.glob("dynsweep_runs/*/dynsweep_sweep.json")), 60, "sweep")
    return proc


def wait_for_progress(client: MlflowClient, finished: int, step: int, timeout: float = 180):
    """Wait until ``finished`` trials are FINISHED and a running one has stored step ``step``."""

    def reached():
        _, children = sweep_runs(client)
        done = [c for c in children if c.info.status == "FINISHED"]
        running = [c for c in children if c.info.status == "RUNNING"]
        logged = int(running[0].data.tags.get("dynsweep.logged_step", "-1")) if running else -1
        return len(done) == finished and logged >= step

    wait_for(reached, timeout, f"{finished} finished trials and a running one at step {step}")
