"""MLflow on a real PostgreSQL server: the bulk metric path and packed member runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import tracking
from tests.services import postgres
from tracking.mlflow_sql import sql_store
from tracking.sender import MetricSender
from tracking.trial_run import RunSpec, end_runs, find_or_create_runs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pg():
    with postgres() as uri:
        yield uri


def test_bulk_metric_path_stores_every_point_once(pg, caplog):
    assert sql_store(pg) is not None, "the bulk path must work on PostgreSQL"
    exp = tracking.ensure_experiment(pg, "bulk")
    parent = tracking.start_sweep_run(pg, exp, "sweep", {}, {})
    run = tracking.TrialRun.open(pg, exp, parent, "trial_0", "trial 0", {"lr": "0.1"}, {})
    for step in range(1, 1001):
        run.log_metrics(step, {"train/loss": 1.0 / step, "train/acc": step / 1000})
        if step == 500:
            run.flush()  # two batches at least, with a watermark in between
    run.end("FINISHED")
    assert "falls back" not in caplog.text and "log_batch" not in caplog.text
    client = MlflowClient(pg)
    for key, value in (("train/loss", lambda s: 1.0 / s), ("train/acc", lambda s: s / 1000)):
        history = client.get_metric_history(run.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 1001)), key
        assert all(m.value == pytest.approx(value(m.step)) for m in history)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["dynsweep.logged_step"] == "1000"
    assert stored.data.metrics["train/loss"] == pytest.approx(1e-3)


def test_packed_member_runs_are_created_and_ended_together(pg):
    exp = tracking.ensure_experiment(pg, "members")
    parent = tracking.start_sweep_run(pg, exp, "sweep", {}, {})
    sender = MetricSender(pg)
    specs = [RunSpec(f"trial_0-{i:03d}", f"m{i}", {"i": str(i)}, {}) for i in range(3)]
    runs = find_or_create_runs(pg, exp, parent, specs, sender, pack_id="trial_0")
    for step in range(1, 51):
        for i, run in enumerate(runs):
            run.log_metrics(step, {"train/loss": float(i * 100 + step)})
    sender.flush()
    end_runs(pg, {r.run_id: ("FINISHED", None, {}) for r in runs})
    sender.close()
    client = MlflowClient(pg)
    for i, run in enumerate(runs):
        got = client.get_run(run.run_id)
        assert got.info.status == "FINISHED" and got.data.params == {"i": str(i)}
        assert got.data.tags["dynsweep.pack"] == "trial_0"
        history = client.get_metric_history(run.run_id, "train/loss")
        assert sorted(m.value for m in history) == [float(i * 100 + s) for s in range(1, 51)]
    retry_sender = MetricSender(pg)
    again = find_or_create_runs(
        pg, exp, parent, specs, retry_sender, pack_id="trial_0"
    )  # a retried pack
    retry_sender.close()
    assert [r.run_id for r in again] == [r.run_id for r in runs]
    assert all(r.final is not None for r in again)  # finished: not reopened


def test_a_plain_postgresql_uri_works_for_tracking_and_optuna(pg):
    """The URI the docs give (``postgresql://``, no driver) on the real server."""
    import optuna

    from orchestrator.registry import optuna_storage

    plain = "postgresql://" + pg.split("://", 1)[1]
    uri = tracking.resolve_uri(plain)
    exp = tracking.ensure_experiment(uri, "plain-uri")
    parent = tracking.start_sweep_run(uri, exp, "sweep", {}, {})
    run = tracking.TrialRun.open(uri, exp, parent, "trial_0", "trial 0", {}, {})
    run.log_metrics(1, {"train/loss": 0.5})
    run.end("FINISHED")
    assert MlflowClient(plain).get_run(run.run_id).data.metrics["train/loss"] == 0.5
    # Optuna in a database of its own: it and MLflow each keep an alembic_version table
    optuna_uri = plain.rsplit("/", 1)[0] + "/postgres"
    study = optuna.create_study(storage=optuna_storage(optuna_uri), study_name="plain-uri")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    loaded = optuna.load_study(study_name="plain-uri", storage=optuna_storage(optuna_uri))
    assert len(loaded.trials) == 2
