"""The sweep's parent run ends FINISHED, FAILED (with the error) or KILLED on every path,
whoever calls ``sweep.run``: a failure injected at each stage — the Optuna storage (its RDB
storage connects when the searcher is built), Tune itself, the summary, the analysis — on a
real sqlite store, without Ray (Tune's ``fit`` is replaced where it would run)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import tracking
from orchestrator import cli, sweep
from orchestrator.context import SweepSetup
from orchestrator.spec import load_spec
from orchestrator.storage import SweepFolder
from tests.helpers import BASE, merge


class FakeTuner:
    def __init__(self, error: BaseException | None = None):
        self.error = error

    def fit(self):
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def uri(tmp_path_factory):  # one store for the module: creating one takes seconds
    return f"sqlite:///{tmp_path_factory.mktemp('parent') / 'mlflow.db'}"


@pytest.fixture
def setup(tmp_path, uri):
    def make(**extra) -> tuple[SweepSetup, SweepFolder, str]:
        spec = load_spec(raw=merge(BASE, {"analysis": [{"step": "edm", "input": "train/loss"}]}))
        if extra:
            spec = load_spec(raw=merge(spec.model_dump(mode="json"), extra))
        exp = tracking.ensure_experiment(uri, spec.experiment_name())
        parent = tracking.start_sweep_run(uri, exp, "t-sweep", spec.resolved(), {})
        child = MlflowClient(uri).create_run(exp, tags={"mlflow.parentRunId": parent})
        folder = SweepFolder.at(str(tmp_path / "runs")).child("t-sweep")
        setup = SweepSetup(spec, uri, exp, parent, str(tmp_path), {}, None, folder.location)
        return setup, folder, child.info.run_id

    return make


def status(setup: SweepSetup, run_id: str | None = None) -> tuple[str, str | None]:
    run = MlflowClient(setup.uri).get_run(run_id or setup.parent_run_id)
    return run.info.status, run.data.tags.get("dynsweep.error")


def test_a_finished_sweep_closes_its_parent_run_for_a_library_caller(setup, monkeypatch):
    s, folder, child = setup()
    monkeypatch.setattr(sweep, "_tuner", lambda *a: FakeTuner())
    outcome = sweep._execute(s, folder, restore=False)  # no `after`: a library caller
    assert outcome.status == "FINISHED"
    assert status(s) == ("FINISHED", None)
    assert status(s, child)[0] == "FAILED"  # a trial run left open: its process died


def test_a_broken_optuna_storage_fails_the_parent_run(setup):
    s, folder, child = setup(
        search={"algorithm": "optuna", "storage": "postgresql://u@127.0.0.1:1/optuna"},
        num_samples=2,
    )
    with pytest.raises(Exception, match="127.0.0.1"):
        sweep._execute(s, folder, restore=False)
    state, error = status(s)
    assert state == "FAILED" and "127.0.0.1" in error
    assert status(s, child)[0] == "FAILED"


def test_tune_failing_fails_the_parent_run(setup, monkeypatch):
    s, folder, child = setup()
    monkeypatch.setattr(sweep, "_tuner", lambda *a: FakeTuner(RuntimeError("tune broke")))
    with pytest.raises(RuntimeError, match="tune broke"):
        sweep._execute(s, folder, restore=False, after=cli._report())
    assert status(s) == ("FAILED", "RuntimeError: tune broke")


@pytest.mark.parametrize("stage", ["summary", "analysis"])
def test_summary_or_analysis_failing_fails_the_parent_run(setup, monkeypatch, stage):
    s, folder, child = setup()
    monkeypatch.setattr(sweep, "_tuner", lambda *a: FakeTuner())

    def broken(*args, **kwargs):
        raise ValueError(f"{stage} broke")

    monkeypatch.setattr("orchestrator.summary.sweep_summary", lambda outcome: "summary")
    where = {"summary": "orchestrator.summary.sweep_summary", "analysis": "analysis.runner.analyze"}
    monkeypatch.setattr(where[stage], broken)
    with pytest.raises(ValueError, match=f"{stage} broke"):
        sweep._execute(s, folder, restore=False, after=cli._report())
    assert status(s) == ("FAILED", f"ValueError: {stage} broke")


def test_the_parent_run_stays_open_while_the_analysis_runs(setup, monkeypatch):
    s, folder, child = setup()
    monkeypatch.setattr(sweep, "_tuner", lambda *a: FakeTuner())
    monkeypatch.setattr("orchestrator.summary.sweep_summary", lambda outcome: "summary")
    seen = []
    monkeypatch.setattr("analysis.runner.analyze", lambda *a, **k: seen.append(status(s)[0]) or [])
    assert sweep._execute(s, folder, restore=False, after=cli._report()).status == "FINISHED"
    assert seen == ["RUNNING"] and status(s) == ("FINISHED", None)


def test_ctrl_c_after_the_trials_marks_the_parent_killed(setup, monkeypatch):
    s, folder, child = setup()
    monkeypatch.setattr(sweep, "_tuner", lambda *a: FakeTuner())

    def interrupted(outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep._execute(s, folder, restore=False, after=interrupted)
    state, error = status(s)
    assert state == "KILLED" and "dynsweep resume" in error
