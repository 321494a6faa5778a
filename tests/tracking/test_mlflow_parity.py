"""Runs written through MLflow's tables (tracking.mlflow_sql) read back through ``MlflowClient``
exactly like runs MLflow wrote itself; without those internals, the fall-back is logged."""

from __future__ import annotations

import logging
import math
import time

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import tracking
from tracking import mlflow_sql
from tracking import tags as tag
from tracking.mlflow_sql import NewRun, sql_store
from tracking.sender import MetricSender
from tracking.trial_run import RunSpec, TrialRun, end_runs, find_or_create_runs

PACK = "PACK-1"
SPEC = RunSpec("TRIAL-001", "lr=0.1,depth=3", {"lr": "0.1", "model.depth": "3"}, {tag.SEED: "7"})
STEPS = {  # step → values: NaN, ±inf, a key missing at some steps
    1: {"loss": 2.5, "acc": 0.1},
    2: {"loss": math.nan, "acc": 0.2},
    3: {"loss": math.inf, "acc": 0.3, "lr": 0.1},
    4: {"loss": -math.inf, "acc": 0.4},
    5: {"loss": 0.75, "acc": 0.5},
}
END = ("FAILED", "boom: it broke", {tag.STOP_REASON: "diverged"})


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One store for the module (creating MLflow's tables takes seconds); each test has its own
    experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('parity') / 'mlflow.db'}"


@pytest.fixture
def fresh_reports(monkeypatch):
    """Each test sees the fall-back reports of its own store (they are once per process)."""
    monkeypatch.setattr(mlflow_sql, "_reported", set())
    monkeypatch.setattr(mlflow_sql, "_stores", {})


def histories(client, run_id, keys):
    return {
        k: sorted(
            (m.key, m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, k)
        )
        for k in keys
    }


def comparable(run) -> str:
    """Everything ``get_run`` gives, with the run's own id and its times left out (those must
    differ), as text (NaN equal to NaN)."""
    d = run.to_dictionary()
    info = d["info"]
    for key in ("run_id", "run_uuid", "start_time", "end_time"):
        info.pop(key, None)
    info["artifact_uri"] = info["artifact_uri"].replace(run.info.run_id, "<run>")
    return repr(d)


def check_times(fast, ref, before: int) -> None:
    now = int(time.time() * 1000)
    for run in (fast, ref):
        start, end = run.info.start_time, run.info.end_time
        assert isinstance(start, int) and before - 1000 <= start <= end <= now  # ms, not s or µs


def test_a_member_run_reads_back_like_one_from_client_create_run(uri, fresh_reports):
    """Created by find_or_create_runs, metrics through the sender's bulk path, ended by end_runs —
    against create_run + log_batch + set_terminated with the same tags, params and metrics."""
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "parity")
    parent = client.create_run(exp, run_name="sweep").info.run_id
    before = int(time.time() * 1000)

    sender = MetricSender(uri)
    assert sender._sql is not None  # the fast path is what this test is about
    (member,) = find_or_create_runs(uri, exp, parent, [SPEC], sender, pack_id=PACK)
    for step, values in STEPS.items():
        member.log_metrics(step, values)
    sender.flush()
    end_runs(uri, {member.run_id: END})
    sender.close()
    fast = member.run_id

    keys = ["loss", "acc", "lr"]
    stamp = {(m[0], m[1]): m[2] for h in histories(client, fast, keys).values() for m in h}
    ref_tags = {
        "mlflow.parentRunId": parent,
        tag.TRIAL: SPEC.trial_id,
        tag.PACK: PACK,
        tag.ATTEMPTS: "1",
        **SPEC.tags,
    }
    ref = client.create_run(exp, run_name=SPEC.run_name, tags=ref_tags).info.run_id
    metrics = [
        Metric(k, v, stamp[k, s], s) for s, values in STEPS.items() for k, v in values.items()
    ]
    client.log_batch(ref, params=[Param(k, v) for k, v in SPEC.params.items()])
    client.log_batch(ref, metrics=metrics, tags=[RunTag(tag.LOGGED_STEP, "5")])
    status, error, tags = END
    tags = {**tags, tag.ERROR: error, "mlflow.note.content": error}
    client.log_batch(ref, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(ref, status)

    a, b = client.get_run(fast), client.get_run(ref)
    assert comparable(a) == comparable(b)  # tags, params, latest metrics, status, name, ...
    assert a.data.tags == b.data.tags and a.data.tags["mlflow.runName"] == SPEC.run_name
    assert a.info.status == "FAILED" and a.info.lifecycle_stage == "active"
    assert a.info.user_id == b.info.user_id
    assert repr(a.data.metrics) == repr({"loss": 0.75, "acc": 0.5, "lr": 0.1})
    location = client.get_experiment(exp).artifact_location
    for run in (a, b):
        assert run.info.artifact_uri == f"{location}/{run.info.run_id}/artifacts"
    check_times(a, b, before)
    assert repr(histories(client, fast, keys)) == repr(histories(client, ref, keys))

    for query in (
        f"tags.`{tag.SEED}` = '7'",
        f"tags.`{tag.PACK}` = '{PACK}' and tags.`mlflow.parentRunId` = '{parent}'",
        "params.lr = '0.1' and metrics.acc >= 0.5 and attributes.status = 'FAILED'",
        f"attributes.run_name = '{SPEC.run_name}'",
    ):
        found = client.search_runs([exp], filter_string=query)
        assert {r.info.run_id for r in found} == {fast, ref}, query


def test_a_trial_run_on_the_sql_path_reads_back_like_one_through_the_client(
    uri, fresh_reports, monkeypatch
):
    """``TrialRun.open`` and ``end`` (a fatal failure, with tags) on a SQL store — one
    transaction each — against the same calls with the fast path off (the client's
    create_run + log_batch + set_terminated); a retry finds either run again."""
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "trial parity")
    parent = client.create_run(exp, run_name="sweep").info.run_id
    before = int(time.time() * 1000)
    status, error, tags = END
    ids = {}
    for fast in (True, False):
        monkeypatch.setattr(mlflow_sql, "_stores", {} if fast else {uri: None})
        run = TrialRun.open(uri, exp, parent, f"trial_{fast}", SPEC.run_name, SPEC.params,
                            {**SPEC.tags, "team": "x"})  # fmt: skip
        run.log_metrics(1, {"loss": 0.5})
        run.end(status, error, fatal=True, tags=tags)
        ids[fast] = run.run_id
        assert (mlflow_sql._stores[uri] is not None) == fast
        again = TrialRun.open(uri, exp, parent, f"trial_{fast}", SPEC.run_name, SPEC.params, {})
        assert again.run_id == run.run_id and again.fatal_error == error and again.attempt == 1
        again.end(status, error, fatal=True)

    a, b = client.get_run(ids[True]), client.get_run(ids[False])
    ta, tb = dict(a.data.tags), dict(b.data.tags)
    assert ta.pop(tag.TRIAL) == "trial_True" and tb.pop(tag.TRIAL) == "trial_False"
    assert ta == tb and ta[tag.FATAL] == error and ta[tag.STOP_REASON] == "diverged"
    assert a.data.params == b.data.params == SPEC.params
    assert a.data.metrics == b.data.metrics == {"loss": 0.5}
    assert (a.info.status, a.info.run_name, a.info.user_id, a.info.lifecycle_stage) == (
        b.info.status, b.info.run_name, b.info.user_id, b.info.lifecycle_stage,
    )  # fmt: skip
    location = client.get_experiment(exp).artifact_location
    for run in (a, b):
        assert run.info.artifact_uri == f"{location}/{run.info.run_id}/artifacts"
    check_times(a, b, before)


def test_the_store_interface_matches_the_client_on_edge_cases(uri):
    """Out-of-order steps, a point given twice in one batch, a step over two batches, a
    credential in a param, ``mlflow.user``: as MLflow stores them."""
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "edges")
    store = sql_store(uri)
    assert store is not None
    before = int(time.time() * 1000)
    tags = {"mlflow.user": "alice", "team": "x"}
    params = {"db": "postgresql://bob:hunter2secret@db/x"}
    created = store.create_runs(exp, [NewRun("t", "edge", tags, params)])
    fast = created["t"][0]
    assert created["t"][1] == f"{client.get_experiment(exp).artifact_location}/{fast}/artifacts"
    ref = client.create_run(exp, run_name="edge", tags=tags).info.run_id
    tracking.log_params(client, ref, params)

    batches = [
        [("m", 1.0, 10, 3), ("m", 1.0, 10, 3), ("m", 5.0, 11, 1), ("m", math.nan, 12, 2)],
        [("m", 2.0, 13, 3), ("n", -0.0, 14, 0), ("m", math.inf, 15, 2)],
    ]
    for batch in batches:
        store.write_metrics({fast: batch}, {fast: {"k": str(len(batch))}})
        metrics = [Metric(k, v, ts, s) for k, v, ts, s in batch]
        client.log_batch(ref, metrics=metrics, tags=[RunTag("k", str(len(batch)))])
    store.end_runs({fast: ("FINISHED", {"done": "yes"})})
    client.set_tag(ref, "done", "yes")
    client.set_terminated(ref, "FINISHED")

    a, b = client.get_run(fast), client.get_run(ref)
    assert comparable(a) == comparable(b)
    assert a.info.user_id == "alice" and "hunter2secret" not in a.data.params["db"]
    assert a.data.metrics == {"m": 2.0, "n": 0.0}  # the highest step wins, then the timestamp
    check_times(a, b, before)
    assert repr(histories(client, fast, ["m", "n"])) == repr(histories(client, ref, ["m", "n"]))


def lookup_missing(monkeypatch):
    def gone(uri):
        raise AttributeError(
            "module 'mlflow.tracking._tracking_service.utils' has no attribute '_get_store'"
        )

    monkeypatch.setattr(mlflow_sql, "_mlflow_store", gone)
    return "has no attribute '_get_store'"


def column_missing(monkeypatch):
    monkeypatch.setattr(mlflow_sql, "_METRIC_COLUMNS", (*mlflow_sql._METRIC_COLUMNS, "model_id"))
    return "metrics table lacks ['model_id']"


@pytest.mark.parametrize("break_it", [lookup_missing, column_missing])
def test_a_sql_store_without_the_expected_internals_warns_once_and_still_logs(
    uri, fresh_reports, monkeypatch, caplog, break_it
):
    reason = break_it(monkeypatch)
    caplog.set_level(logging.DEBUG, logger=mlflow_sql.__name__)
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "fallback")
    parent = client.create_run(exp, run_name="sweep").info.run_id

    sender = MetricSender(uri)
    assert sender._sql is None
    MetricSender(uri).close()  # a second sender of the same store: no second warning
    (member,) = find_or_create_runs(
        uri, exp, parent, [SPEC], sender, pack_id=PACK
    )  # one run at a time
    for step, values in STEPS.items():
        member.log_metrics(step, values)
    sender.flush()
    end_runs(uri, {member.run_id: END})
    sender.close()

    records = [r for r in caplog.records if r.name == mlflow_sql.__name__]
    assert [r.levelno for r in records] == [logging.WARNING]
    message = records[0].getMessage()
    assert reason in message and mlflow.__version__ in message and "log_batch" in message
    run = client.get_run(member.run_id)
    assert [m.step for m in client.get_metric_history(member.run_id, "acc")] == [1, 2, 3, 4, 5]
    assert run.data.metrics["acc"] == 0.5 and run.data.tags[tag.LOGGED_STEP] == "5"
    assert run.data.tags[tag.PACK] == PACK and run.data.params == SPEC.params
    assert run.info.status == "FAILED" and run.data.tags[tag.ERROR] == END[1]


def test_a_server_is_no_sql_store_and_says_so_only_at_debug(fresh_reports, caplog):
    caplog.set_level(logging.DEBUG, logger=mlflow_sql.__name__)
    assert sql_store("http://127.0.0.1:9") is None
    assert sql_store("http://127.0.0.1:9") is None
    records = [r for r in caplog.records if r.name == mlflow_sql.__name__]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert "not a SQL store" in records[0].getMessage()
