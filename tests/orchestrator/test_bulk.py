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
