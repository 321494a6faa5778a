"""The background path metrics take to the store: one queue and one sender thread.

A :class:`MetricSender` serves one run (an ordinary trial) or many (the members of a packed
trial): ``put`` only appends one ``(run, step, timestamp, values)`` tuple, and the sender
thread ships the queue whenever it holds a batch or a second has passed — on a SQL store
(sqlite, PostgreSQL) through :meth:`.mlflow_sql.SqlStore.write_steps`, every run of the batch
in one transaction (up to 20,000 points; the rows built by C loops over the queued steps, see
:func:`.bulk.step_params`, so the thread holds the GIL for little more than the driver's
binding); otherwise with ``log_batch`` per run (at most 1,000 points a request). Each batch
also moves every run's ``dynsweep.logged_step`` tag to the last step whose points are all
stored, so a retried attempt can skip what is already there.

Back-pressure: at most ``max_pending`` points (:data:`MAX_PENDING_POINTS`; ~60 bytes each as
queued in steps of 20 values, measured with tracemalloc: ~12 MB) wait in the queue, plus the
one batch in flight; a ``put`` that would pass the bound waits for the store (training waits,
no point is dropped), and the first wait logs one WARNING with the backlog. A batch the store
refuses is kept and sent again (a point is stored once: the SQL path writes a batch in one
transaction, MLflow's ``log_batch`` skips points it already holds) until the store has been
failing for :data:`RETRY_FOR_S` seconds (``DYNSWEEP_TRACKING_RETRY_S``); then the sender stops
with one error naming the store and what to do, raised by the next ``put`` or ``flush``, and
every point stored so far stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from tracking import tags as tag
from tracking.bulk import BULK_MAX, Step
from tracking.mlflow_sql import sql_store
from tracking.secrets import redact
from tracking.store import MAX_METRICS, retry_if_locked

log = logging.getLogger(__name__)

SEND_EVERY_S = 1.0
MAX_PENDING_POINTS = 200_000  # metric values queued before put waits for the store
RETRY_FOR_S = 600.0  # a store failing this long stops the sender (DYNSWEEP_TRACKING_RETRY_S)

Entry = tuple[str, int, int, dict[str, float]]  # run id, step, timestamp (ms), values


class MetricSender:
    def __init__(self, uri: str, max_pending: int = MAX_PENDING_POINTS) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending: expected a positive number of points: {max_pending}")
        self.uri = uri
        self.max_pending = max_pending
        self.peak = 0  # most points ever queued at once (≤ max_pending, or one larger step)
        self.waited_s = 0.0  # time put spent waiting for the store
        self._warned = False
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
        n = len(entry[3])
        with self._cond:
            # A step that alone is larger than the bound goes into an empty queue.
            if self._points and self._points + n > self.max_pending and self._error is None:
                self._wait_for_room(n)
            if self._error is not None:
                raise self._failure()
            self._pending.append(entry)
            self._queued[run_id, step] = self._queued.get((run_id, step), 0) + 1
            self._points += n
            self.peak = max(self.peak, self._points)
            if self._points >= self._batch_max:
                self._cond.notify_all()

    def _wait_for_room(self, n: int) -> None:
        """Wait (lock held) until ``n`` more points fit under the bound; warn once."""
        if not self._warned:
            self._warned = True
            log.warning(
                "the tracking store %s is slower than this trial: %d points queued (the bound, "
                "max_pending = %d); training waits until the store has taken them",
                redact(self.uri), self._points, self.max_pending,
            )  # fmt: skip
        start = time.monotonic()
        while self._points and self._points + n > self.max_pending and self._error is None:
            self._cond.notify_all()  # a full batch is ready
            self._cond.wait(0.1)
        self.waited_s += time.monotonic() - start

    def _failure(self) -> RuntimeError:
        error = self._error
        return RuntimeError(
            f"logging metrics to the tracking store {redact(self.uri)} failed: {redact(str(error))}"
        )

    def flush(self) -> None:
        """Send every queued point now and wait until the store has them."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while (self._pending or self._inflight) and self._error is None:
                self._cond.wait(0.05)
        if self._error is not None:
            raise self._failure() from self._error

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
                if self._error is not None:  # stopped: nothing more is sent
                    self._cond.notify_all()
                    return
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
                self._send_until_stored(taken, watermarks)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
            finally:
                last_sent = time.monotonic()
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _send_until_stored(self, taken, watermarks) -> None:
        """Send one batch; while the store refuses it, send it again (with a growing pause) for
        up to :data:`RETRY_FOR_S` seconds of failures, then raise :class:`StoreUnavailable`."""
        retry_for = float(os.environ.get("DYNSWEEP_TRACKING_RETRY_S", RETRY_FOR_S))
        first_failure, pause = None, 0.5
        while True:
            try:
                retry_if_locked(lambda: self._send(taken, watermarks))
                if first_failure is not None:
                    log.warning(
                        "the tracking store %s accepts metrics again after %.0f s",
                        redact(self.uri), time.monotonic() - first_failure,
                    )  # fmt: skip
                return
            except Exception as exc:
                if _permanent(exc):  # sending again cannot help (a bad value, a deleted run)
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    log.warning(
                        "the tracking store %s refused metrics (%s); %d points queued, sending "
                        "again for up to %.0f s",
                        redact(self.uri), redact(str(exc))[:300], self._points, retry_for,
                    )  # fmt: skip
                if now - first_failure >= retry_for:
                    raise StoreUnavailable(self.uri, now - first_failure, exc) from exc
            time.sleep(pause)
            pause = min(pause * 2, 10.0)

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
            self._sql.write_steps(taken, {r: {tag.LOGGED_STEP: w} for r, w in watermarks.items()})
            return
        for run_id, steps in taken.items():
            metrics = [
                Metric(k, float(v), ts, step)
                for step, ts, values in steps
                for k, v in values.items()
            ]
            tags = [RunTag(tag.LOGGED_STEP, watermarks[run_id])]
            self.client.log_batch(run_id, metrics=metrics, tags=tags)


_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE",
              "PERMISSION_DENIED", "UNAUTHENTICATED"}  # fmt: skip


def _permanent(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code in _PERMANENT
    return isinstance(exc, (ValueError, TypeError))


class StoreUnavailable(Exception):
    """The tracking store refused metrics for longer than the sender retries."""

    def __init__(self, uri: str, seconds: float, cause: BaseException) -> None:
        where = "tracking server" if uri.startswith(("http://", "https://")) else "database"
        super().__init__(
            f"the {where} {redact(uri)} did not accept metrics for {seconds:.0f} s "
            f"(last error: {redact(str(cause))[:300]}). Every step before the unsent ones is "
            f"stored (tag dynsweep.logged_step). Start the {where} again, then "
            f"`dynsweep resume` the sweep; set DYNSWEEP_TRACKING_RETRY_S to wait longer"
        )
