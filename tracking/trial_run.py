"""The MLflow run of one Tune trial, and the background path its metrics take.

A retried or resumed trial finds its run again by the ``dynsweep.trial_id`` tag, so a trial
never gets a second run. ``log_metrics`` only queues the values for a :class:`.MetricSender`
(its own, or one shared by the member runs of a packed trial), so the training loop never
waits for the store. Each batch moves the run's ``dynsweep.logged_step`` tag (after its
metrics are stored), and a retried attempt skips steps at or below it: no step is ever logged
twice. ``flush()`` waits until everything is stored (checkpoints, the end of the trial); a
crash loses at most the batch in flight.

:func:`find_or_create_runs` is the one way a trial's run is opened: found again by its trial
id under the sweep's parent run (a retry or a resumed sweep), or created with its tags and
params. A plain trial opens one run (:meth:`TrialRun.open`); a packed trial opens its members'
runs together, all logging through one sender (128 members: on a SQL store one search and one
transaction that creates them all, see :meth:`.mlflow_sql.SqlStore.create_runs`, instead of
several transactions a run, which on sqlite cost more than the training).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from mlflow.tracking import MlflowClient

from tracking import tags as tag
from tracking.mlflow_sql import NewRun, sql_store
from tracking.secrets import redact_obj
from tracking.sender import MetricSender
from tracking.store import end_run, log_params, reopen_run, retry_if_locked, set_tags


@dataclass(frozen=True)
class RunSpec:
    """One trial's run to open: its trial id (a packed member: ``TRIAL-NNN``), name, params
    and tags (besides those every trial run gets, see :func:`find_or_create_runs`)."""

    trial_id: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]


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
        sender: MetricSender | None = None,
        final: dict[str, float] | None = None,
        run_name: str = "",
    ) -> None:
        self.uri, self.run_id = uri, run_id
        self.attempt = attempt  # 0 for the run's first attempt, +1 for each retry or resume
        self.fatal_error = fatal_error  # reason of an earlier failure that retrying cannot fix
        self.params = params or {}  # as logged when the run was created
        self.client = MlflowClient(uri)
        self.logged_step = logged_step  # steps <= this were logged by an earlier attempt
        self.artifact_uri = artifact_uri
        # The last metrics of a run that had already finished (see continue_run); else None.
        self.final = final
        self.run_name = run_name
        self._own_sender = sender is None
        self.sender = sender or MetricSender(uri)

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
        sender: MetricSender | None = None,
    ) -> TrialRun:
        """Find this trial's run (a retry or resume) or create it: :func:`find_or_create_runs`
        for one run; ``sender``: a metric path shared with other runs, else its own."""
        spec = RunSpec(trial_id, run_name, params, tags)
        (run,) = find_or_create_runs(uri, experiment_id, parent_id, [spec], sender)
        return run

    @classmethod
    def attach(cls, uri: str, run_id: str, sender: MetricSender | None = None) -> TrialRun:
        """Log into an existing run from another process (rank 0 of a distributed trial);
        each attach is a new attempt (its trajectory chunks and step watermark continue)."""
        return cls.continue_run(uri, MlflowClient(uri).get_run(run_id), sender)

    @classmethod
    def continue_run(cls, uri: str, run, sender: MetricSender | None = None) -> TrialRun:
        """A new attempt in the existing MLflow ``run`` (as found by a search): reopened if it
        was ended, its attempt count raised; steps it already holds are skipped.

        A FINISHED run is left as it is, with ``final`` (its last metrics) set: the trial
        decides between :meth:`reopen` (PBT continues a trial from another's checkpoint) and
        reporting ``final`` (it ended before the driver died, after Tune last saved its
        experiment state, so a resumed sweep starts it again).
        """
        new = cls(
            uri,
            run.info.run_id,
            int(run.data.tags.get(tag.LOGGED_STEP, "-1")),
            dict(run.data.params),
            run.info.artifact_uri,
            run.data.tags.get(tag.FATAL),
            int(run.data.tags.get(tag.ATTEMPTS, "1")) - 1,
            sender,
            final=dict(run.data.metrics) if run.info.status == "FINISHED" else None,
            run_name=run.info.run_name,
        )
        if new.final is None:
            new.reopen(run.info.status)
        return new

    def reopen(self, status: str = "FINISHED") -> None:
        """Start a new attempt: the run RUNNING again, its attempt count raised."""
        if status != "RUNNING":
            reopen_run(self.uri, self.run_id)
        self.attempt += 1
        self.final = None
        set_tags(self.client, self.run_id, {tag.ATTEMPTS: str(self.attempt + 1)})

    # --- metrics -----------------------------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Queue metric values of ``step``; returns at once (unless the store is far behind)."""
        if step > self.logged_step:
            self.sender.put(self.run_id, step, metrics)

    def flush(self) -> None:
        """Send every queued point now and wait until the store has them."""
        self.sender.flush()

    def histories(self, keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(steps, values) of each metric as stored (after a flush), sorted by step."""
        self.flush()
        out = {}
        for key in keys:
            points = sorted(
                (m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)
            )
            steps, values = zip(*points) if points else ((), ())
            out[key] = (np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=float))
        return out

    # --- artifacts, tags, status ---------------------------------------------------------
    def local_artifact_dir(self, path: str) -> Path | None:
        """The folder of artifact ``path`` when artifacts are plain local files (written there
        directly, no copy); ``None`` for remote stores (use :meth:`log_artifact`)."""
        parsed = urlparse(self.artifact_uri)
        if parsed.scheme not in ("", "file"):
            return None
        return Path(unquote(parsed.path)) / path

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        retry_if_locked(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, obj: dict, name: str) -> None:
        obj = redact_obj(obj)
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
            retry_if_locked(lambda: self.client.log_artifact(self.run_id, str(written), folder))

    def set_tags(self, tags: dict[str, str]) -> None:
        set_tags(self.client, self.run_id, tags)

    def close(self) -> None:
        """Flush, and stop the sender thread when this run owns it; the run stays as it is
        (another process may log to it, or :meth:`end` it)."""
        if self._own_sender:
            self.sender.close()
        else:
            self.sender.flush()

    def end(
        self,
        status: str,
        error: str | None = None,
        fatal: bool = False,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Close, then end the run with ``status`` (``error``: its ``dynsweep.error`` and note;
        ``fatal``: tagged ``dynsweep.fatal``, so a retry fails at once instead of training)."""
        self.close()
        tags = dict(tags or {})
        if fatal and error:
            tags[tag.FATAL] = error
        end_runs(self.uri, {self.run_id: (status, error, tags)})

    def end_if_running(self, status: str, error: str | None = None) -> None:
        """End the run unless another process (a worker) already did."""
        if self.client.get_run(self.run_id).info.status == "RUNNING":
            self.end(status, error)


def end_runs(uri: str, ends: dict[str, tuple[str, str | None, dict[str, str]]]) -> None:
    """End runs, ``{run_id: (status, error, tags)}``: on a SQL store in one transaction (status,
    end time, ``tags`` and the error's tags, as :func:`.store.end_run` sets them), else one run
    at a time through ``MlflowClient``."""
    store = sql_store(uri)
    if store is None:
        client = MlflowClient(uri)
        for run_id, (status, error, tags) in ends.items():
            if tags:
                set_tags(client, run_id, tags)
            end_run(uri, run_id, status, error)
        return
    with_error = {}
    for run_id, (status, error, tags) in ends.items():
        extra = {tag.ERROR: error, tag.NOTE: error} if error else {}
        with_error[run_id] = (status, {**tags, **extra})
    store.end_runs(with_error)


def find_or_create_runs(
    uri: str,
    experiment_id: str,
    parent_id: str,
    specs: list[RunSpec],
    sender: MetricSender | None = None,
    pack_id: str | None = None,
) -> list[TrialRun]:
    """The run of each spec, children of ``parent_id``: found again by its trial id (a retried
    or resumed trial: a new attempt in it, see :meth:`TrialRun.continue_run`), else created
    with the tags every trial run has (parent, trial id, attempts, ``dynsweep.pack = pack_id``
    for the members of a packed trial) and the spec's own tags and params. ``sender``: one
    metric path for all the runs (a pack's), else each run gets its own.

    On a SQL store every missing run is created in one transaction; other stores (servers)
    create them one at a time through ``MlflowClient``."""
    client = MlflowClient(uri)
    if pack_id is not None:
        which = f"tags.`{tag.PACK}` = '{pack_id}'"
    else:
        (only,) = specs
        which = f"tags.`{tag.TRIAL}` = '{only.trial_id}'"
    found: dict[str, object] = {}
    for run in client.search_runs(
        [experiment_id],
        filter_string=f"{which} and tags.`{tag.PARENT}` = '{parent_id}'",
        max_results=50_000,
    ):  # newest first: that one is continued
        found.setdefault(run.data.tags[tag.TRIAL], run)
    own = {tag.PACK: pack_id} if pack_id is not None else {}
    new = [
        NewRun(
            s.trial_id,
            s.run_name,
            {tag.PARENT: parent_id, tag.TRIAL: s.trial_id, **own, tag.ATTEMPTS: "1", **s.tags},
            s.params,
        )
        for s in specs
        if s.trial_id not in found
    ]
    created = _create_runs(uri, client, experiment_id, new) if new else {}
    runs = []
    for s in specs:
        if s.trial_id in found:
            runs.append(TrialRun.continue_run(uri, found[s.trial_id], sender))
        else:
            run_id, artifact_uri = created[s.trial_id]
            runs.append(
                TrialRun(
                    uri, run_id, -1, s.params, artifact_uri, sender=sender, run_name=s.run_name
                )
            )
    return runs


def _create_runs(
    uri: str, client: MlflowClient, experiment_id: str, new: list[NewRun]
) -> dict[str, tuple[str, str]]:
    """Create runs, ``{trial_id: (run_id, artifact_uri)}``: one transaction on a SQL store."""
    store = sql_store(uri)
    if store is not None:
        return store.create_runs(experiment_id, new)
    created = {}
    for n in new:
        tags = redact_obj(n.tags)
        run = retry_if_locked(
            lambda n=n, t=tags: client.create_run(experiment_id, run_name=n.run_name, tags=t)
        )
        log_params(client, run.info.run_id, n.params)
        created[n.trial_id] = (run.info.run_id, run.info.artifact_uri)
    return created
