"""The background path metrics take to the store: one queue and one sender thread.

A :class:`MetricSender` serves one run (an ordinary trial) or many (the members of a packed
trial): ``put`` only appends one ``(run, step, timestamp, values)`` tuple, and the sender
thread ships the queue whenever it holds a batch or a second has passed — on a SQL store
(sqlite, PostgreSQL) through :meth:`.mlflow_sql.SqlStore.write_steps`, every run of the batch
in one transaction (up to 20,000 points; the rows built by C loops over the queued steps, see
:func:`.bulk.step_params`, so the thread holds the GIL for little more than the driver's
binding); otherwise with ``log_batch`` per run (at most 1,000 points a request). Each batch
also moves every run's ``dynsweep.logged_step`` tag to the last step whose points are all
stored, so a retried attempt can skip what is already there. A batch that fails (after retries
on a locked database) is logged when it fails and raised by the next ``flush``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from tracking.bulk import BULK_MAX, Step
from tracking.mlflow_sql import sql_store
from tracking.secrets import redact
from tracking.store import MAX_METRICS, STEP_TAG, _retry

log = logging.getLogger(__name__)

SEND_EVERY_S = 1.0
MAX_PENDING = 200_000  # points buffered before put waits for the store

Entry = tuple[str, int, int, dict[str, float]]  # run id, step, timestamp (ms), values


class MetricSender:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = MlflowClient(uri)
        self._sql = sql_store(uri)  # None: log_batch (a server, or logged why not)
        self._batch_max = BULK_MAX if self._sql is not None else MAX_METRICS - 1
        self._pending: deque[Entry] = deque()
        self._queued: dict[tuple[str, int], int] = {}  # entries per (run, step)
        self._points = 0  # metric values in _pending
        self._cond = threading.Condition()
        self._inflight = 0
        self._urgent = False  # flush() asked: send what is queued without waiting
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dynsweep-metrics", daemon=True)
        self._thread.start()

    def put(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Queue values of ``step``; returns at once (unless the store is far behind)."""
        entry = (run_id, step, int(time.time() * 1000), dict(metrics))
        with self._cond:
            while self._points > MAX_PENDING and self._error is None:
                self._cond.wait(0.1)
            self._pending.append(entry)
            self._queued[run_id, step] = self._queued.get((run_id, step), 0) + 1
            self._points += len(entry[3])
            if self._points >= self._batch_max:
                self._cond.notify_all()

    def flush(self) -> None:
        """Send every queued point now and wait until the store has them."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while (self._pending or self._inflight) and self._error is None:
                self._cond.wait(0.05)
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"logging metrics to {self.uri} failed: {error}") from error

    def close(self) -> None:
        """Flush and stop the sender thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        last_sent = time.monotonic()
        while True:
            with self._cond:
                # Wait for a full batch, a second since the last send, or a flush/close:
                # sending each step's few points at once would cost a transaction per step.
                while not (self._urgent or self._closed or self._points >= self._batch_max):
                    remaining = SEND_EVERY_S - (time.monotonic() - last_sent)
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if not self._pending:
                    self._urgent = False
                    self._cond.notify_all()
                    if self._closed:
                        return
                    last_sent = time.monotonic()
                    continue
                taken, watermarks = self._take()
                self._inflight += 1
            try:
                _retry(lambda t=taken, w=watermarks: self._send(t, w))
            except BaseException as exc:
                log.warning("logging metrics to %s failed: %s", redact(self.uri), redact(str(exc)))
                with self._cond:
                    self._error = exc
            finally:
                last_sent = time.monotonic()
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _take(self) -> tuple[dict[str, list[Step]], dict[str, str]]:
        """Up to one batch of queued points by run, as ``(step, timestamp, values)`` (whole
        steps where possible), and the step watermark each run reaches. Called with the lock
        held."""
        taken: dict[str, list[Step]] = {}
        last: dict[str, int] = {}
        size = 0
        while self._pending and size < self._batch_max:
            run_id, step, ts, metrics = self._pending[0]
            room = self._batch_max - size
            if len(metrics) > room and size:
                break  # this step goes whole into the next batch
            if len(metrics) > room:  # one step with more values than a batch holds: split it
                items = list(metrics.items())
                self._pending[0] = (run_id, step, ts, dict(items[room:]))
                metrics = dict(items[:room])
            else:
                self._pending.popleft()
                left = self._queued.pop((run_id, step)) - 1
                if left:
                    self._queued[run_id, step] = left
            taken.setdefault(run_id, []).append((step, ts, metrics))
            size += len(metrics)
            self._points -= len(metrics)
            last[run_id] = step
        # A watermark may only cover steps whose points are all stored.
        marks = {r: str(s - 1 if (r, s) in self._queued else s) for r, s in last.items()}
        return taken, marks

    def _send(self, taken: dict[str, list[Step]], watermarks: dict[str, str]) -> None:
        if self._sql is not None:
            self._sql.write_steps(taken, {r: {STEP_TAG: w} for r, w in watermarks.items()})
            return
        for run_id, steps in taken.items():
            metrics = [
                Metric(k, float(v), ts, step)
                for step, ts, values in steps
                for k, v in values.items()
            ]
            tags = [RunTag(STEP_TAG, watermarks[run_id])]
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
