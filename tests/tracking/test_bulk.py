"""The bulk metric path into SQL stores stores exactly what ``log_batch`` stores."""

from __future__ import annotations

import math

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from tracking.mlflow_sql import sql_store


def test_bulk_rows_match_log_batch_including_nan_inf_and_latest_values(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bulk")
    bulk_run, bulk_other, batch_run = (client.create_run(exp).info.run_id for _ in range(3))
    values = [0.5, math.nan, math.inf, -math.inf, 2.0, -1.5]
    # Steps out of order: the latest value is the one of the highest step, not the last sent.
    points = [
        Metric("loss", v, 1000 + i, step)
        for i, (v, step) in enumerate(zip(values, [1, 2, 3, 4, 6, 5]))
    ]
    points.append(Metric("acc", 0.25, 7, 0))
    writer = sql_store(uri)
    assert writer is not None
    rows = [(m.key, m.value, m.timestamp, m.step) for m in points]
    # Two runs in one transaction (the members of a packed trial share one).
    mark = "dynsweep.logged_step"
    writer.write_metrics({bulk_run: rows[:3], bulk_other: rows[3:]}, {bulk_run: {mark: "3"}})
    writer.write_metrics({bulk_run: rows[3:], bulk_other: rows[:3]}, {bulk_run: {mark: "6"}})
    client.log_batch(batch_run, metrics=points[:3], tags=[RunTag("dynsweep.logged_step", "3")])
    client.log_batch(batch_run, metrics=points[3:], tags=[RunTag("dynsweep.logged_step", "6")])

    def stored(run_id, key):
        return [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]

    for key in ("loss", "acc"):
        assert repr(stored(bulk_run, key)) == repr(stored(batch_run, key))
        assert repr(sorted(stored(bulk_other, key))) == repr(sorted(stored(batch_run, key)))
    a, b = client.get_run(bulk_run).data, client.get_run(batch_run).data
    assert a.metrics == b.metrics == {"loss": 2.0, "acc": 0.25}
    assert client.get_run(bulk_other).data.metrics == a.metrics
    assert a.tags["dynsweep.logged_step"] == "6"


def test_a_server_store_has_no_bulk_path():
    assert sql_store("http://127.0.0.1:9") is None


def test_step_params_are_the_rows_of_metric_rows_built_without_a_loop_over_points():
    from tracking.bulk import CHUNK, chunks, latest_rows, metric_rows, step_params

    run = "r" * 32
    steps = [(s, 1000 + s, {"a": s * 0.5, "b": -s}) for s in range(1, 6)]
    steps += [(6, 1006, {"val/acc": 0.9}), (7, 1007, {"a": 7, "b": 1e300})]
    params, latest = step_params(run, steps)
    points = [(k, v, ts, s) for s, ts, values in steps for k, v in values.items()]
    rows = metric_rows(run, points)
    assert sorted(zip(*[iter(params)] * 6)) == sorted(rows)
    assert all(type(v) is float for v in params[1::6])  # ints stored as MLflow stores them
    assert sorted(latest) == sorted(latest_rows(rows))
    # NaN or inf, a step given twice, steps out of order: the general rows instead.
    assert step_params(run, [*steps, (8, 1008, {"a": math.nan})]) is None
    assert step_params(run, [*steps, (7, 1007, {"c": 1.0})]) is None
    assert step_params(run, [*steps, (3, 1008, {"a": 1.0})]) is None

    multi, single = chunks(list(range(6 * (2 * CHUNK + 3))))
    assert [len(c) for c in multi] == [6 * CHUNK] * 2 and len(single) == 3
    assert single[0] == tuple(range(12 * CHUNK, 12 * CHUNK + 6))


def test_write_steps_over_several_statements_reads_back_like_log_batch(tmp_path):
    from tracking.bulk import CHUNK

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bulk")
    fast, other, ref = (client.create_run(exp).info.run_id for _ in range(3))
    keys = [f"m{k}" for k in range(7)]
    steps = [(s, 10 * s, {k: s + i / 8 for i, k in enumerate(keys)}) for s in range(CHUNK)]
    steps[5] = (5, 50, {"m0": math.inf, "m1": math.nan})  # this run takes the general rows
    writer = sql_store(uri)
    writer.write_steps({fast: steps[:100], other: steps[100:]}, {fast: {"t": "99"}})
    writer.write_steps({fast: steps[100:], other: steps[:100]}, {fast: {"t": "149"}})
    metrics = [Metric(k, v, ts, s) for s, ts, values in steps for k, v in values.items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(ref, metrics=metrics[i : i + 1000])
    for key in keys:
        want = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(ref, key))
        for run in (fast, other):
            got = sorted(
                (m.step, m.timestamp, m.value) for m in client.get_metric_history(run, key)
            )
            assert repr(got) == repr(want)
    assert client.get_run(fast).data.metrics == client.get_run(ref).data.metrics
    assert client.get_run(other).data.metrics == client.get_run(ref).data.metrics
    assert client.get_run(fast).data.tags["t"] == "149"
