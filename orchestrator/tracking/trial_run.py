"""The MLflow run of one Tune trial, and the background path its metrics take.

A retried or resumed trial finds its run again by the ``dynsweep.trial_id`` tag, so a trial
never gets a second run. ``log_metrics`` only appends to a buffer; a sender thread ships the
buffer whenever it holds a batch or a second has passed, so the training loop never waits for
the store: on a SQL store (sqlite, PostgreSQL) through :mod:`.bulk` (up to 20,000 points a
transaction), otherwise with ``log_batch`` (at most 1,000 a request). Each batch also moves the
run's ``dynsweep.logged_step`` tag (after its metrics are stored), and a retried attempt skips
steps at or below it: no step is ever logged twice. ``flush()`` waits until everything is
stored (checkpoints, the end of the trial); a crash loses at most the batch in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.tracking.bulk import BULK_MAX, bulk_writer
from orchestrator.tracking.store import (
    MAX_METRICS,
    STEP_TAG,
    TRIAL_TAG,
    _retry,
    end_run,
    log_params,
    reopen_run,
    set_tags,
)

SEND_EVERY_S = 1.0
MAX_PENDING = 200_000  # points buffered before log_metrics waits for the store


class TrialRun:
    """The MLflow child run of one Tune trial, opened once per attempt of that trial."""

    def __init__(
        self,
        uri: str,
        run_id: str,
        logged_step: int,
        params: dict[str, str] | None = None,
        artifact_uri: str = "",
        fatal_error: str | None = None,
        attempt: int = 0,
    ) -> None:
        self.uri, self.run_id = uri, run_id
        self.attempt = attempt  # 0 for the run's first attempt, +1 for each retry or resume
        self.fatal_error = fatal_error  # reason of an earlier failure that retrying cannot fix
        self.params = params or {}  # as logged when the run was created
        self.client = MlflowClient(uri)
        self.logged_step = logged_step  # steps <= this were logged by an earlier attempt
        self.artifact_uri = artifact_uri
        self._bulk = bulk_writer(uri)
        self._batch_max = BULK_MAX if self._bulk is not None else MAX_METRICS - 1
        # (step, timestamp, {key: value}) per log_metrics call; Metric objects are built by
        # the sender thread, so the training thread only appends one tuple a step.
        self._pending: deque[tuple[int, int, dict[str, float]]] = deque()
        self._points = 0  # metric values in _pending
        self._cond = threading.Condition()
        self._inflight = 0
        self._urgent = False  # flush() asked: send what is queued without waiting
        self._error: BaseException | None = None
        self._closed = False
        self._sender = threading.Thread(
            target=self._send_loop, name="dynsweep-metrics", daemon=True
        )
        self._sender.start()

    @classmethod
    def open(
        cls,
        uri: str,
        experiment_id: str,
        parent_id: str,
        trial_id: str,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
    ) -> TrialRun:
        """Find this trial's run (a retry or resume) or create it."""
        client = MlflowClient(uri)
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
            f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=1,
        )
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                reopen_run(uri, run.info.run_id)
            attempts = int(run.data.tags.get("dynsweep.attempts", "1")) + 1
            set_tags(client, run.info.run_id, {"dynsweep.attempts": str(attempts)})
            logged = int(run.data.tags.get(STEP_TAG, "-1"))
            return cls(
                uri,
                run.info.run_id,
                logged,
                dict(run.data.params),
                run.info.artifact_uri,
                run.data.tags.get("dynsweep.fatal"),
                attempts - 1,
            )
        all_tags = {
            "mlflow.parentRunId": parent_id,
            TRIAL_TAG: trial_id,
            "dynsweep.attempts": "1",
            **tags,
        }
        run = _retry(lambda: client.create_run(experiment_id, run_name=run_name, tags=all_tags))
        log_params(client, run.info.run_id, params)
        return cls(uri, run.info.run_id, -1, params, run.info.artifact_uri)

    @classmethod
    def attach(cls, uri: str, run_id: str) -> TrialRun:
        """Log into an existing run from another process (rank 0 of a distributed trial);
        each attach is a new attempt (its trajectory chunks and step watermark continue)."""
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            reopen_run(uri, run_id)
        attempts = int(run.data.tags.get("dynsweep.attempts", "1")) + 1
        set_tags(client, run_id, {"dynsweep.attempts": str(attempts)})
        logged = int(run.data.tags.get(STEP_TAG, "-1"))
        return cls(
            uri,
            run_id,
            logged,
            dict(run.data.params),
            run.info.artifact_uri,
            run.data.tags.get("dynsweep.fatal"),
            attempts - 1,
        )

    # --- metrics -----------------------------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Queue metric values of ``step``; returns at once (unless the store is far behind)."""
        if step <= self.logged_step:
            return
        entry = (step, int(time.time() * 1000), dict(metrics))
        with self._cond:
            while self._points > MAX_PENDING and self._error is None:
                self._cond.wait(0.1)
            self._pending.append(entry)
            self._points += len(entry[2])
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

    def _send_loop(self) -> None:
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
                taken, watermark = self._take()
                self._inflight += 1
            batch = [(k, v, ts, step) for step, ts, items in taken for k, v in items]
            try:
                _retry(lambda b=batch, w=watermark: self._send(b, w))
            except BaseException as exc:
                with self._cond:
                    self._error = exc
            finally:
                last_sent = time.monotonic()
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _take(self) -> tuple[list[tuple[int, int, list]], str]:
        """Up to one batch of queued points, as ``(step, timestamp, items)`` (whole steps where
        possible), and the step watermark it completes. Called with the lock held."""
        taken: list[tuple[int, int, list]] = []
        size, last = 0, -1
        while self._pending and size < self._batch_max:
            step, ts, metrics = self._pending[0]
            room = self._batch_max - size
            if len(metrics) > room and taken:
                break  # this step goes whole into the next batch
            items = list(metrics.items())
            if len(items) > room:  # one step with more values than a batch holds: split it
                self._pending[0] = (step, ts, dict(items[room:]))
                items = items[:room]
            else:
                self._pending.popleft()
            taken.append((step, ts, items))
            size += len(items)
            self._points -= len(items)
            last = step
        if self._pending and self._pending[0][0] == last:
            last -= 1  # the watermark may only cover steps whose points are all stored
        return taken, str(last)

    def _send(self, batch: list[tuple[str, float, int, int]], watermark: str) -> None:
        if self._bulk is not None:
            self._bulk.write(self.run_id, batch, {STEP_TAG: watermark})
            return
        metrics = [Metric(k, float(v), ts, step) for k, v, ts, step in batch]
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(STEP_TAG, watermark)])

    # --- artifacts, tags, status ---------------------------------------------------------
    def local_artifact_dir(self, path: str) -> Path | None:
        """The folder of artifact ``path`` when artifacts are plain local files (written there
        directly, no copy); ``None`` for remote stores (use :meth:`log_artifact`)."""
        parsed = urlparse(self.artifact_uri)
        if parsed.scheme not in ("", "file"):
            return None
        return Path(unquote(parsed.path)) / path

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, obj: dict, name: str) -> None:
        local = self.local_artifact_dir("")
        if local is None:
            self.client.log_dict(self.run_id, obj, name)
            return
        local.mkdir(parents=True, exist_ok=True)  # a local store: write in place, no round trip
        (local / name).write_text(json.dumps(obj, indent=2))

    def artifact_path(self, path: str, scratch: Path) -> Path:
        """Where to write artifact ``path``: in place on a local store, else in ``scratch``
        (then :meth:`keep` uploads it)."""
        local = self.local_artifact_dir(path)
        target = local if local is not None else scratch / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def keep(self, written: Path, path: str) -> None:
        """Make a file written at :meth:`artifact_path` an artifact (uploads if remote)."""
        if self.local_artifact_dir(path) is None:
            folder = str(Path(path).parent) if Path(path).parent != Path(".") else None
            _retry(lambda: self.client.log_artifact(self.run_id, str(written), folder))

    def set_tags(self, tags: dict[str, str]) -> None:
        set_tags(self.client, self.run_id, tags)

    def close(self) -> None:
        """Flush and stop the sender thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._sender.join(timeout=30)

    def finish(
        self,
        status: str,
        error: str | None = None,
        fatal: bool = False,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.close()
        tags = dict(tags or {})
        if fatal and error:
            tags["dynsweep.fatal"] = error
        if tags:
            self.set_tags(tags)
        end_run(self.uri, self.run_id, status, error)

    def finish_if_running(self, status: str, error: str | None = None) -> None:
        """End the run unless another process (a worker) already did."""
        if self.client.get_run(self.run_id).info.status == "RUNNING":
            self.finish(status, error)
