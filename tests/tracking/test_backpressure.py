"""Back-pressure: a store slower than the trial keeps the metric queue within its bound, makes
training wait (one warning with the backlog) and loses no point.

The store is made slow for real: another connection holds an exclusive lock on the sqlite
file for a few seconds, so the sender's transaction waits in the database (MLflow's sqlite
engine waits up to 20 s for a lock) while the trial keeps logging.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from mlflow.tracking import MlflowClient

import tracking
from tracking.sender import MetricSender

BOUND = 2_000  # points
KEYS = [f"train/m{k}" for k in range(20)]
STEPS = 1_000
LOCKED_S = 3.0


def test_a_slow_store_bounds_the_queue_makes_training_wait_and_loses_nothing(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "bp")
    parent = tracking.start_sweep_run(uri, exp, "bp", {}, {})
    sender = MetricSender(uri, max_pending=BOUND)
    run = tracking.TrialRun.open(uri, exp, parent, "t", "t", {}, {}, sender=sender)

    sampled, done = [], threading.Event()

    def sample() -> None:  # the queue's size, seen from outside, every millisecond
        while not done.is_set():
            sampled.append(sender._points)
            time.sleep(0.001)

    lock = sqlite3.connect(
        tmp_path / "mlflow.db", isolation_level=None, timeout=30, check_same_thread=False
    )
    lock.execute("BEGIN EXCLUSIVE")  # every writer now waits for this connection
    released = threading.Timer(LOCKED_S, lock.execute, ["COMMIT"])
    watcher = threading.Thread(target=sample)
    caplog.set_level(logging.WARNING, logger="tracking.sender")
    start = time.monotonic()
    released.start()
    watcher.start()
    try:
        for step in range(STEPS):
            run.log_metrics(step, dict(zip(KEYS, [step + k / 100 for k in range(20)])))
        logged = time.monotonic() - start
        run.close()
        sender.close()
    finally:
        done.set()
        watcher.join()
        released.join()
        lock.close()

    # The bound held: never more than BOUND points queued, though 20,000 were logged while
    # the store took none for LOCKED_S seconds.
    assert max(sampled) <= BOUND and sender.peak <= BOUND
    assert sender.peak > BOUND - len(KEYS)  # the queue did fill up to it
    # Training waited for the store (it logs 1,000 steps in well under a second otherwise).
    assert logged >= LOCKED_S - 0.5 and sender.waited_s >= LOCKED_S - 1.0
    # One warning, with the backlog.
    warnings = [r.getMessage() for r in caplog.records if "slower than this trial" in r.message]
    assert len(warnings) == 1, warnings
    assert f"{BOUND - BOUND % len(KEYS)} points queued" in warnings[0]
    # No point lost, none twice.
    client = MlflowClient(uri)
    for k, key in enumerate(KEYS):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, key))
        assert history == [(s, s + k / 100) for s in range(STEPS)], key


def test_the_bound_must_be_positive(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="max_pending"):
        MetricSender(f"sqlite:///{tmp_path / 'x.db'}", max_pending=0)
