"""MLflow's SQL tables, written directly: the one module that uses MLflow's private names.

Why: on a SQL tracking store (sqlite, PostgreSQL, MySQL) the public client costs one ORM object
per metric point and several transactions per run. A packed trial of 128 members logging every
step, or opening and ending its 128 runs, spends more time in MLflow than in training — and on
sqlite, one writer at a time, packs racing for the lock. :class:`SqlStore` writes the same rows
into the same tables in one transaction per call: metric batches (:meth:`SqlStore.write_metrics`,
rows from :mod:`tracking.bulk`), member runs with their tags and params
(:meth:`SqlStore.create_runs`) and their ends (:meth:`SqlStore.end_runs`).

What it relies on, all checked by :func:`sql_store` before any use:

- ``mlflow.tracking._tracking_service.utils._get_store`` giving a ``SqlAlchemyStore`` with
  ``ManagedSessionMaker``, ``_update_latest_metrics_if_necessary``, ``get_experiment`` and
  ``engine``;
- the ORM models ``SqlRun``, ``SqlTag``, ``SqlParam``, ``SqlMetric`` of
  ``mlflow.store.tracking.dbmodels.models`` and the columns written here;
- ``mlflow.utils.validation._validate_metric_name``, ``mlflow.utils.uri.append_to_uri_path``.

MLflow's SQL schema has been stable since 2.x; pyproject pins the MLflow versions tested, and
``tests/tracking/test_mlflow_parity.py`` checks that a run written here reads back through
``MlflowClient`` exactly like one MLflow wrote. When a piece is missing (an MLflow upgrade),
:func:`sql_store` logs a WARNING — once per URI, with the reason and MLflow's version — and
returns ``None``: callers then take the public client (``log_batch``, one run at a time), which
is correct, only slower. Everything else in dynsweep goes through ``MlflowClient``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import chain
from urllib.parse import urlparse

from tracking.bulk import (
    CHUNK,
    Point,
    Row,
    Step,
    chunks,
    flat,
    latest_rows,
    metric_rows,
    step_params,
)
from tracking.secrets import credential_values, redact, redact_values
from tracking.store import retry_if_locked

log = logging.getLogger(__name__)

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})  # MLflow's database stores
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
_RUN_COLUMNS = (
    "run_uuid", "name", "artifact_uri", "experiment_id", "source_type", "source_name",
    "entry_point_name", "user_id", "status", "start_time", "end_time", "deleted_time",
    "source_version", "lifecycle_stage",
)  # fmt: skip
_KEY_VALUE_COLUMNS = ("key", "value", "run_uuid")  # tags, params
_STORE_NAMES = ("ManagedSessionMaker", "_update_latest_metrics_if_necessary", "get_experiment")
_reported: set[str] = set()  # URIs whose fall-back was logged (once per process)
_stores: dict[str, SqlStore | None] = {}  # sql_store's answers
_report_lock = threading.Lock()


@dataclass(frozen=True)
class NewRun:
    """A run for :meth:`SqlStore.create_runs`; ``tags`` and ``params`` as the caller would pass
    them to ``create_run``/``log_batch`` (redacted here)."""

    trial_id: str  # the caller's key: create_runs answers by it
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]


class SqlStore:
    """MLflow's tables of one SQL tracking store; get one from :func:`sql_store`."""

    def __init__(self, uri: str, store) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
        from mlflow.utils.uri import append_to_uri_path
        from mlflow.utils.validation import _validate_metric_name

        mark = _PLACEHOLDER.get(store.engine.dialect.paramstyle)
        if mark is None:
            raise TypeError(f"unsupported driver parameter style {store.engine.dialect.paramstyle}")
        for model, columns in (
            (SqlMetric, _METRIC_COLUMNS),
            (SqlRun, _RUN_COLUMNS),
            (SqlTag, _KEY_VALUE_COLUMNS),
            (SqlParam, _KEY_VALUE_COLUMNS),
        ):
            missing = set(columns) - set(model.__table__.columns.keys())
            if missing:
                raise AttributeError(
                    f"MLflow's {model.__tablename__} table lacks {sorted(missing)}"
                )
        for name in _STORE_NAMES:
            getattr(store, name)  # AttributeError now (→ the public client), not mid-trial
        for name in ("tags", "params"):  # the relationships create_runs fills
            getattr(SqlRun, name)
        self.uri, self._store = uri, store
        row = f"({', '.join([mark] * len(_METRIC_COLUMNS))})"
        head = f"INSERT INTO {SqlMetric.__tablename__} ({', '.join(_METRIC_COLUMNS)}) VALUES "
        self._insert, self._insert_chunk = head + row, head + ", ".join([row] * CHUNK)
        self._SqlMetric, self._SqlParam, self._SqlRun, self._SqlTag = (
            SqlMetric, SqlParam, SqlRun, SqlTag,
        )  # fmt: skip
        self._run_name_tag, self._user_tag = MLFLOW_RUN_NAME, MLFLOW_USER
        self._artifact_uri = append_to_uri_path
        self._validate_key = _validate_metric_name
        self._known: set[str] = set()  # metric keys already validated
        self._locations: dict[str, str] = {}  # experiment id → artifact location

    def write_metrics(
        self, points: dict[str, list[Point]], tags: dict[str, dict[str, str]]
    ) -> None:
        """Insert the ``points`` of each run, update its latest metrics and set its ``tags``,
        all in one transaction (all or nothing). The caller retries a locked database."""
        rows = {run_id: metric_rows(run_id, run_points) for run_id, run_points in points.items()}
        keys = {run_id: {p[0] for p in run_points} for run_id, run_points in points.items()}
        self._write(
            keys,
            [flat(r) for r in rows.values()],
            [latest_rows(r) for r in rows.values()],
            tags,
        )

    def write_steps(self, steps: dict[str, list[Step]], tags: dict[str, dict[str, str]]) -> None:
        """:meth:`write_metrics` of the sender's queue: ``(step, timestamp, values)`` by run,
        the rows built without a Python loop over points where that holds
        (:func:`.bulk.step_params`)."""
        keys, params, newest = {}, [], []
        for run_id, run_steps in steps.items():
            keys[run_id] = set().union(*(s[2] for s in run_steps))
            built = step_params(run_id, run_steps)
            if built is None:  # steps out of order, a step twice, NaN or inf: the general rows
                points = [(k, v, ts, s) for s, ts, values in run_steps for k, v in values.items()]
                rows = metric_rows(run_id, points)
                built = flat(rows), latest_rows(rows)
            params.append(built[0])
            newest.append(built[1])
        self._write(keys, params, newest, tags)

    def _write(
        self,
        keys: dict[str, set[str]],
        params: list[list],
        newest: list[list[Row]],
        tags: dict[str, dict[str, str]],
    ) -> None:
        """One transaction: the rows (flat ``params``, one list per run), MLflow's latest
        metrics from the ``newest`` rows of each run, the ``tags``."""
        for unseen in keys.values():
            unseen -= self._known
            for key in unseen:
                self._validate_key(key)
            self._known |= unseen
        multi, single = chunks(list(chain.from_iterable(params)))
        with self._store.ManagedSessionMaker(read_only=False) as session:
            connection = session.connection()
            if multi:
                connection.exec_driver_sql(self._insert_chunk, multi)
            if single:
                connection.exec_driver_sql(self._insert, single)
            for run_newest in newest:  # MLflow's routine takes one run a call
                if run_newest:
                    objects = [
                        self._SqlMetric(key=k, value=v, timestamp=ts, step=s, is_nan=n, run_uuid=r)
                        for k, v, ts, s, n, r in run_newest
                    ]
                    self._store._update_latest_metrics_if_necessary(objects, session)
            for run_id, run_tags in tags.items():
                for key, value in run_tags.items():
                    session.merge(self._SqlTag(key=key, value=value, run_uuid=run_id))

    def create_runs(self, experiment_id: str, runs: list[NewRun]) -> dict[str, tuple[str, str]]:
        """Create ``runs`` RUNNING, with their tags and params, in one transaction, as
        ``MlflowClient.create_run`` + ``log_batch`` would; answers
        ``{trial_id: (run_id, artifact_uri)}``."""
        if not runs:
            return {}
        location = self._locations.get(experiment_id)
        if location is None:  # an experiment's artifact location never changes
            location = self._store.get_experiment(experiment_id).artifact_location
            self._locations[experiment_id] = location
        now = int(time.time() * 1000)
        out, rows, secrets = {}, [], credential_values()
        for new in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = self._artifact_uri(location, run_id, "artifacts")
            tags = redact_values({**new.tags, self._run_name_tag: new.run_name}, 5000, secrets)
            run = self._SqlRun(
                name=tags[self._run_name_tag],
                artifact_uri=artifact_uri,
                run_uuid=run_id,
                experiment_id=experiment_id,
                source_type="UNKNOWN",
                source_name="",
                entry_point_name="",
                user_id=tags.get(self._user_tag, "unknown"),
                status="RUNNING",
                start_time=now,
                end_time=None,
                deleted_time=None,
                source_version="",
                lifecycle_stage="active",
            )
            run.tags = [self._SqlTag(key=k, value=v) for k, v in tags.items()]
            params = redact_values(new.params, 6000, secrets)
            run.params = [self._SqlParam(key=k, value=v) for k, v in params.items()]
            rows.append(run)
            out[new.trial_id] = (run_id, artifact_uri)

        def write() -> None:
            with self._store.ManagedSessionMaker(read_only=False) as session:
                session.add_all(rows)

        retry_if_locked(write)
        return out

    def end_runs(self, ends: dict[str, tuple[str, dict[str, str]]]) -> None:
        """End runs, ``{run_id: (status, tags)}``: status and end time set, tags (redacted)
        set, in one transaction, as ``set_tags`` + ``MlflowClient.set_terminated`` would."""
        if not ends:
            return
        SqlRun, SqlTag = self._SqlRun, self._SqlTag
        now, secrets = int(time.time() * 1000), credential_values()

        def write() -> None:
            with self._store.ManagedSessionMaker(read_only=False) as session:
                runs = session.query(SqlRun).filter(SqlRun.run_uuid.in_(list(ends))).all()
                for run in runs:
                    status, tags = ends[run.run_uuid]
                    run.status, run.end_time = status, now
                    for key, value in redact_values(tags, 5000, secrets).items():
                        session.merge(SqlTag(key=key, value=value, run_uuid=run.run_uuid))

        retry_if_locked(write)


def _mlflow_store(uri: str):
    """MLflow's own store object for ``uri`` (cached by MLflow), and its SQL store class."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _get_store

    return _get_store(uri), SqlAlchemyStore


def sql_store(uri: str) -> SqlStore | None:
    """The direct path into the tables of ``uri``'s SQL store, or ``None``: not a SQL store
    (a server: logged at DEBUG), or MLflow's internals are not as expected (WARNING). Either
    way the caller uses ``MlflowClient``. One answer per URI and process (as MLflow caches its
    store)."""
    with _report_lock:
        if uri in _stores:
            return _stores[uri]
    found = _sql_store(uri)
    with _report_lock:
        return _stores.setdefault(uri, found)


def _sql_store(uri: str) -> SqlStore | None:
    is_sql = (urlparse(uri).scheme.split("+")[0]) in SQL_SCHEMES
    try:
        store, sql_class = _mlflow_store(uri)
        if not isinstance(store, sql_class):
            if is_sql:
                raise TypeError(f"MLflow's store is a {type(store).__name__}, not SqlAlchemyStore")
            _report(uri, logging.DEBUG, f"not a SQL store ({type(store).__name__})")
            return None
        is_sql = True
        return SqlStore(uri, store)
    except (ImportError, AttributeError, TypeError) as exc:
        _report(uri, logging.WARNING if is_sql else logging.DEBUG, f"{type(exc).__name__}: {exc}")
        return None


def _report(uri: str, level: int, reason: str) -> None:
    with _report_lock:
        if uri in _reported:
            return
        _reported.add(uri)
    import mlflow

    if level >= logging.WARNING:
        message = (
            "the fast SQL path into MLflow's tables of %s is off — %s (MLflow %s): metrics go "
            "through log_batch and runs are created and ended one at a time, correct but "
            "slower. MLflow's internals may have changed; see tracking/mlflow_sql.py."
        )
    else:
        message = "no fast SQL path for %s — %s (MLflow %s): using MlflowClient"
    log.log(level, message, redact(uri), redact(reason), mlflow.__version__)
