"""P4: metric logging throughput, and what logging 20 metrics every step costs a training loop.

    python -m benchmarks.logging [--points 20000]

Points/s through dynsweep's tracking (``TrialRun.log_metrics`` + the background ``log_batch``
sender, timed until every point is stored) against one ``MlflowClient.log_metric`` call per
point, both to a local sqlite store and to a local MLflow server on 127.0.0.1; then the
slow-down of the 784-256-256-10 MLP loop when it logs 20 metrics every step (the median of
interleaved pairs, each timed until every point is stored), measured ``--runs`` times. Goal:
≥ 50,000 points/s and ≤ 2 % slow-down. The last line is the median slow-down of the runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

import tracking
from benchmarks.common import Timer, machine, plain_loop


def new_run(uri: str, name: str) -> tracking.TrialRun:
    exp = tracking.ensure_experiment(uri, name)
    parent = tracking.start_sweep_run(uri, exp, name, {}, {})
    return tracking.TrialRun.open(uri, exp, parent, name, name, {}, {})


def through_dynsweep(uri: str, points: int, keys: int = 20) -> float:
    run = new_run(uri, f"dynsweep-{time.time_ns()}")
    with Timer() as t:
        for step in range(points // keys):
            run.log_metrics(step, {f"train/m{k}": float(step + k) for k in range(keys)})
        run.close()
    stored = len(run.client.get_metric_history(run.run_id, "train/m0"))
    assert stored == points // keys, f"only {stored} of {points // keys} points stored"
    return points / t.seconds


def one_call_per_point(uri: str, points: int) -> float:
    run = new_run(uri, f"per-point-{time.time_ns()}")
    run.close()
    client = MlflowClient(uri)
    with Timer() as t:
        for i in range(points):
            client.log_metric(run.run_id, f"train/m{i % 20}", float(i), step=i // 20)
    return points / t.seconds


def training(steps: int, uri: str | None) -> tuple[float, float]:
    """(steps/s of the loop alone, steps/s until every point is stored)."""
    if uri is None:
        rate = plain_loop(steps)
        return rate, rate
    run = new_run(uri, f"train-{time.time_ns()}")
    keys = [f"train/m{k}" for k in range(20)]  # a loop's metric names are fixed strings

    def log(step, model, loss):
        run.log_metrics(step, dict(zip(keys, [loss + k for k in range(20)])))

    loop_rate = plain_loop(steps, log)
    with Timer() as drain:
        run.close()
    return loop_rate, steps / (steps / loop_rate + drain.seconds)


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: uvicorn and job workers die with it
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the MLflow server did not start within 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and every process it started (they would skew the timings after)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved pairs a run")
    parser.add_argument("--runs", type=int, default=3, help="runs, each with its own baseline")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sqlite = f"sqlite:///{folder / 'mlflow.db'}"
        rates = {
            "dynsweep -> sqlite": through_dynsweep(sqlite, args.points),
            "log_metric -> sqlite": one_call_per_point(sqlite, 1000),
        }
        server, http = start_server(folder)
        try:
            rates["dynsweep -> server"] = through_dynsweep(http, args.points)
            rates["log_metric -> server"] = one_call_per_point(http, 200)
        finally:
            stop_server(server)
        for name, rate in rates.items():
            print(f"{name:>22}: {rate:10.0f} points/s", flush=True)
        slowdowns = []
        for i in range(args.runs):  # each run measures its own baseline
            slowed, plain, loop_only, logged = slowdown(args.steps, args.repeats, sqlite)
            slowdowns.append(slowed)
            print(
                f"run {i + 1}: training {statistics.median(plain):.1f} steps/s without "
                f"logging, {statistics.median(loop_only):.1f} with 20 metrics while training, "
                f"{statistics.median(logged):.1f} until every point is stored (sqlite; medians "
                f"of {args.repeats} interleaved pairs): slowed {100 * slowed:.1f} %",
                flush=True,
            )
    print(
        f"ratios: dynsweep/log_metric sqlite = "
        f"{rates['dynsweep -> sqlite'] / rates['log_metric -> sqlite']:.0f}x, server = "
        f"{rates['dynsweep -> server'] / rates['log_metric -> server']:.0f}x "
        f"(goal: >= 50,000 points/s)"
    )
    runs = ", ".join(f"{100 * s:.1f}" for s in slowdowns)
    print(
        f"slowdown with logging = {100 * statistics.median(slowdowns):.1f} % (median of "
        f"{args.runs}: {runs}; goal <= 2 %)"
    )


def slowdown(steps: int, repeats: int, uri: str) -> tuple[float, list, list, list]:
    """1 - (steps/s until every point is stored) / (steps/s without logging): the median of
    ``repeats`` interleaved pairs (this VM's speed drifts), and each pair's rates."""
    plain, loop_only, logged = [], [], []
    for _ in range(repeats):
        plain.append(training(steps, None)[0])
        during, stored = training(steps, uri)
        loop_only.append(during)
        logged.append(stored)
    slowed = 1 - statistics.median(b / a for a, b in zip(plain, logged))
    return slowed, plain, loop_only, logged


if __name__ == "__main__":
    main()
