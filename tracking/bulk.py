"""A bulk path for metrics into MLflow's SQL stores (sqlite, PostgreSQL, MySQL).

``MlflowClient.log_batch`` on a SQL store builds one ORM object per point and flushes them
through SQLAlchemy's unit of work: ~11,000 points/s on sqlite here, all of it Python holding
the GIL beside the training loop. :class:`SqlBulkWriter` writes the same rows into the same
tables with one driver-level ``executemany`` of plain tuples per batch (the database driver
does the per-row work in C, mostly without the GIL), updates ``latest_metrics`` from one row
per key with MLflow's own routine, and sets the tags, in one transaction. It relies on MLflow's
SQL schema (stable since 2.x); :func:`bulk_writer` returns ``None`` — callers use
``log_batch`` — for any other store or if that schema's pieces are not where expected.
"""

from __future__ import annotations

import math

FLOAT_MAX = 1.7976931348623157e308
BULK_MAX = 20_000  # points per transaction (no HTTP request limit on this path)
Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class SqlBulkWriter:
    def __init__(self, uri: str) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlTag
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _get_store
        from mlflow.utils.validation import _validate_metric_name

        store = _get_store(uri)
        if not isinstance(store, SqlAlchemyStore):
            raise TypeError(f"{uri} is not a SQL store")
        mark = _PLACEHOLDER.get(store.engine.dialect.paramstyle)
        if mark is None:
            raise TypeError(f"unsupported driver parameter style for {uri}")
        columns = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
        missing = set(columns) - set(SqlMetric.__table__.columns.keys())
        if missing:
            raise AttributeError(f"MLflow's metrics table lacks {missing}")
        self.sql = (
            f"INSERT INTO {SqlMetric.__tablename__} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})"
        )
        self.store, self.SqlMetric, self.SqlTag = store, SqlMetric, SqlTag
        self._validate = _validate_metric_name
        self._known: set[str] = set()
        for name in ("ManagedSessionMaker", "_update_latest_metrics_if_necessary"):
            getattr(store, name)  # AttributeError now (→ log_batch) rather than mid-trial

    def write(self, points: dict[str, list[Point]], tags: dict[str, dict[str, str]]) -> None:
        """Insert the ``points`` of each run and set its ``tags``, all in one transaction
        (all or nothing)."""
        rows, newest = [], {}
        for run_id, run_points in points.items():
            run_rows = self._rows(run_id, run_points)
            rows += run_rows
            latest: dict[str, tuple] = {}
            for row in run_rows:  # MLflow's order: step, then timestamp, then value
                best = latest.get(row[0])
                if best is None or (row[3], row[2], row[1]) > (best[3], best[2], best[1]):
                    latest[row[0]] = row
            newest[run_id] = [
                self.SqlMetric(key=k, value=v, timestamp=ts, step=s, is_nan=nan, run_uuid=r)
                for k, v, ts, s, nan, r in latest.values()
            ]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            if rows:
                session.connection().exec_driver_sql(self.sql, rows)
                for run_newest in newest.values():  # MLflow's routine takes one run a call
                    self.store._update_latest_metrics_if_necessary(run_newest, session)
            for run_id, run_tags in tags.items():
                for key, value in run_tags.items():
                    session.merge(self.SqlTag(key=key, value=value, run_uuid=run_id))

    def _rows(self, run_id: str, points: list[Point]) -> list[tuple]:
        unseen = {p[0] for p in points} - self._known
        for key in unseen:
            self._validate(key)
        self._known |= unseen
        values = [float(p[1]) for p in points]
        if all(map(math.isfinite, values)):  # the common case, without per-point branches
            return [(k, v, ts, s, False, run_id) for (k, _, ts, s), v in zip(points, values)]
        rows = []
        for (k, _, ts, s), v in zip(points, values):
            stored, is_nan = _stored(v)
            rows.append((k, stored, ts, s, is_nan, run_id))
        return rows


def _stored(value: float) -> tuple[float, bool]:
    """(value, is_nan) as MLflow stores a float: NaN as 0 with the flag, ±inf clamped."""
    if value != value:
        return 0.0, True
    return max(min(value, FLOAT_MAX), -FLOAT_MAX), False


def bulk_writer(uri: str) -> SqlBulkWriter | None:
    """The bulk writer for a SQL tracking store, or ``None`` (use ``log_batch``)."""
    try:
        return SqlBulkWriter(uri)
    except (ImportError, AttributeError, TypeError):
        return None
