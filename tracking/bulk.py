"""The rows of the bulk metric path into MLflow's SQL stores (sqlite, PostgreSQL, MySQL).

``MlflowClient.log_batch`` on a SQL store builds one ORM object per point and flushes them
through SQLAlchemy's unit of work: ~11,000 points/s on sqlite here, all of it Python holding
the GIL beside the training loop. The bulk path writes the same rows into the same tables with
driver-level multi-row ``INSERT``\\ s (:data:`CHUNK` rows a statement: the driver binds in C and
the database runs each statement with the GIL released), and updates ``latest_metrics`` from
one row per key.

This module holds what that needs and MLflow does not name: the rows of a batch, stored as
MLflow stores a point — from the sender's steps without a Python loop over points
(:func:`step_params`, the common case) or from any points (:func:`metric_rows`) — the newest row
of each key (:func:`latest_rows`) and the statement parameters (:func:`chunks`). Writing them is
:meth:`tracking.mlflow_sql.SqlStore.write_steps`, the one place that touches MLflow's tables;
``tracking.sender`` uses ``log_batch`` where that is not available.
"""

from __future__ import annotations

import math
from itertools import chain

FLOAT_MAX = 1.7976931348623157e308
BULK_MAX = 20_000  # points per transaction (no HTTP request limit on this path)
CHUNK = 150  # rows per INSERT statement: 900 parameters, under every driver's limit (999)
Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step
Row = tuple[str, float, int, int, bool, str]  # key, value, timestamp, step, is_nan, run id
Step = tuple[int, int, dict[str, float]]  # step, timestamp (ms), values by key


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


def step_params(run_id: str, steps: list[Step]) -> tuple[list, list[Row]] | None:
    """The metrics-table rows of one run's ``steps`` as one flat parameter list (six values a
    row, key by key: neighbouring rows land in the same index pages) and the newest row of each
    key — what :func:`metric_rows` and :func:`latest_rows` give, built by C loops (slices,
    ``zip``, ``map``) with Python work per step and per key, none per point.

    ``None`` where that shortcut does not hold — a value not finite, or ``(step, timestamp)``
    not increasing from one step to the next (a step given twice, steps out of order): then
    the caller takes :func:`metric_rows`.
    """
    groups: dict[tuple[str, ...], list[Step]] = {}  # steps by their keys (usually one group)
    last = None
    for entry in steps:
        if last is not None and entry[:2] <= last:
            return None
        last = entry[:2]
        groups.setdefault(tuple(entry[2]), []).append(entry)
    params: list = []
    newest: dict[str, tuple[int, int, float]] = {}  # key -> (step, timestamp, value)
    for keys, group in groups.items():
        n = len(group)
        step_numbers = [e[0] for e in group]
        stamps = [e[1] for e in group]
        columns = zip(*[e[2].values() for e in group])  # the values of each key, step by step
        block = [None] * (6 * n)
        block[2::6] = stamps
        block[3::6] = step_numbers
        block[4::6] = [False] * n
        block[5::6] = [run_id] * n
        for key, column in zip(keys, columns):
            values = list(map(float, column))
            if not math.isfinite(sum(values)):  # NaN or ±inf among them (or a sum overflow)
                return None
            block[0::6], block[1::6] = [key] * n, values
            params += block
            candidate = (step_numbers[-1], stamps[-1], values[-1])
            if key not in newest or candidate[:2] > newest[key][:2]:
                newest[key] = candidate
    latest = [(k, v, ts, s, False, run_id) for k, (s, ts, v) in newest.items()]
    return params, latest


def chunks(params: list, width: int = 6) -> tuple[list[tuple], list[tuple]]:
    """``params`` (``width`` values a row) as the parameters of full :data:`CHUNK`-row
    statements, and of one-row statements for the rows left over."""
    size = CHUNK * width
    full = len(params) // size * size
    multi = [tuple(params[i : i + size]) for i in range(0, full, size)]
    rest = iter(params[full:])
    return multi, list(zip(*[rest] * width))


def flat(rows: list[Row]) -> list:
    """Rows as one flat parameter list (for :func:`chunks`)."""
    return list(chain.from_iterable(rows))


def stored_value(value: float) -> tuple[float, bool]:
    """(value, is_nan) as MLflow stores a float: NaN as 0 with the flag, ±inf clamped."""
    if value != value:
        return 0.0, True
    return max(min(value, FLOAT_MAX), -FLOAT_MAX), False
