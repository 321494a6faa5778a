"""The services fail, the metrics survive: a trial's run (``tracking.TrialRun``, the path every
trial logs through) while the tracking server is down longer than the client's retries, and
while PostgreSQL restarts under it.

Guaranteed: no point lost, none twice; meanwhile the trial keeps training until its queue
holds ``max_pending`` points, then waits, with a WARNING when the store first refuses a batch
and one when it accepts again. A store that stays down past ``DYNSWEEP_TRACKING_RETRY_S`` stops
the trial with one error naming the store and what to do; what was stored stays.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

import tracking
from tests.helpers import free_port, wait_for_url
from tests.services import postgres, restart_postgres

pytestmark = pytest.mark.e2e
KEYS = [f"m{k}" for k in range(20)]


def _open(uri: str, name: str) -> tracking.TrialRun:
    exp = tracking.ensure_experiment(uri, "faults")
    parent = tracking.start_sweep_run(uri, exp, name, {}, {})
    return tracking.TrialRun.open(uri, exp, parent, name, name, {}, {})


def _log(run: tracking.TrialRun, steps: range, pause: float = 0.0) -> None:
    for step in steps:
        run.log_metrics(step, {k: step + i / 100 for i, k in enumerate(KEYS)})
        time.sleep(pause)


def _assert_once(uri: str, run_id: str, steps: range) -> None:
    client = MlflowClient(uri)
    for i, key in enumerate(KEYS):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == [(s, s + i / 100) for s in steps], key


def _server(folder, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_url(f"http://127.0.0.1:{port}/health", 120)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_tracking_server_down_longer_than_the_clients_retries(tmp_path, monkeypatch, caplog):
    # The client gives up on a request at once (its default: 7 retries over ~4 minutes), so
    # every outage below outlasts its retries; dynsweep's sender then sends the batch again.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    caplog.set_level(logging.WARNING, logger="tracking.sender")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    try:
        # 1. Down 10 s while the trial logs, then back: every point once.
        run = _open(uri, "outage")
        _log(run, range(0, 50))
        run.flush()
        _kill(server)
        _log(run, range(50, 100), pause=0.1)  # training goes on (the queue is far from full)
        time.sleep(5)
        server = _server(tmp_path, port)
        run.close()
        _assert_once(uri, run.run_id, range(100))
        messages = [r.getMessage() for r in caplog.records]
        assert sum("refused metrics" in m for m in messages) == 1, messages
        assert sum("accepts metrics again" in m for m in messages) == 1, messages

        # 2. Down longer than DYNSWEEP_TRACKING_RETRY_S: one clear error; nothing stored lost.
        monkeypatch.setenv("DYNSWEEP_TRACKING_RETRY_S", "3")
        run = _open(uri, "gone")
        _log(run, range(0, 30))
        run.flush()
        _kill(server)
        _log(run, range(30, 40))
        with pytest.raises(RuntimeError) as failed:
            run.flush()
        text = str(failed.value)
        assert f"the tracking server {uri} did not accept metrics for" in text, text
        assert "dynsweep resume" in text and "Start the tracking server again" in text
        with pytest.raises(RuntimeError, match="did not accept metrics"):
            run.log_metrics(40, {"m0": 1.0})  # the trial stops at its next step
        server = _server(tmp_path, port)
        _assert_once(uri, run.run_id, range(30))
        tags = MlflowClient(uri).get_run(run.run_id).data.tags
        assert tags["dynsweep.logged_step"] == "29"  # a retried attempt continues from step 30
    finally:
        if server.poll() is None:
            _kill(server)


def test_postgresql_restarted_under_a_trial_logging_straight_into_it(caplog):
    caplog.set_level(logging.WARNING, logger="tracking.sender")
    with postgres() as uri:
        run = _open(uri, "restart")
        _log(run, range(0, 50))
        run.flush()
        restart = threading.Thread(target=restart_postgres, args=(uri, 3.0))
        restart.start()
        _log(run, range(50, 150), pause=0.05)  # logging through the restart
        restart.join()
        run.close()
        _assert_once(uri, run.run_id, range(150))
        assert MlflowClient(uri).get_run(run.run_id).data.tags["dynsweep.logged_step"] == "149"
