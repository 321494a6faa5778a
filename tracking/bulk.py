"""The rows of the bulk metric path into MLflow's SQL stores (sqlite, PostgreSQL, MySQL).

``MlflowClient.log_batch`` on a SQL store builds one ORM object per point and flushes them
through SQLAlchemy's unit of work: ~11,000 points/s on sqlite here, all of it Python holding
the GIL beside the training loop. The bulk path writes the same rows into the same tables with
one driver-level ``executemany`` of plain tuples per batch (the database driver does the
per-row work in C, mostly without the GIL), and updates ``latest_metrics`` from one row per key.

This module holds what that needs and MLflow does not name: the rows of a batch, stored as
MLflow stores a point (:func:`metric_rows`), and the newest row of each key (:func:`latest_rows`).
Writing them is :meth:`tracking.mlflow_sql.SqlStore.write_metrics`, the one place that touches
MLflow's tables; ``tracking.sender`` uses ``log_batch`` where that is not available.
"""

from __future__ import annotations

import math

FLOAT_MAX = 1.7976931348623157e308
BULK_MAX = 20_000  # points per transaction (no HTTP request limit on this path)
Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step
Row = tuple[str, float, int, int, bool, str]  # key, value, timestamp, step, is_nan, run id


def metric_rows(run_id: str, points: list[Point]) -> list[Row]:
    """The metrics-table rows of ``points`` of one run, as ``log_batch`` stores them: NaN as 0
    with the flag, ±inf clamped, a point given twice (same key, value, timestamp and step)
    stored once."""
    values = [float(p[1]) for p in points]
    if all(map(math.isfinite, values)):  # the common case, without per-point branches
        rows = [(k, v, ts, s, False, run_id) for (k, _, ts, s), v in zip(points, values)]
    else:
        rows = []
        for (k, _, ts, s), v in zip(points, values):
            stored, is_nan = stored_value(v)
            rows.append((k, stored, ts, s, is_nan, run_id))
    unique = list(dict.fromkeys(rows))  # the whole row is the table's primary key
    return unique if len(unique) < len(rows) else rows


def latest_rows(rows: list[Row]) -> list[Row]:
    """The newest row of each key of one run, by MLflow's order: step, then timestamp, then
    value."""
    latest: dict[str, Row] = {}
    for row in rows:
        best = latest.get(row[0])
        if best is None or (row[3], row[2], row[1]) > (best[3], best[2], best[1]):
            latest[row[0]] = row
    return list(latest.values())


def stored_value(value: float) -> tuple[float, bool]:
    """(value, is_nan) as MLflow stores a float: NaN as 0 with the flag, ±inf clamped."""
    if value != value:
        return 0.0, True
    return max(min(value, FLOAT_MAX), -FLOAT_MAX), False
