"""The sweep's parent run ends FINISHED, FAILED (with the error) or KILLED on every path of a
:class:`SweepSession`, whoever runs it (the CLI or a library caller): a failure injected at each
stage — the Optuna storage (its RDB storage connects when the searcher is built), Tune itself,
the summary, the analysis — on a real sqlite store, the whole walk from the spec, without Ray
(Ray's start and Tune's ``fit`` are replaced where they would run)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import session as session_module
from orchestrator.session import SweepSession
from orchestrator.spec import load_spec
from tests.helpers import BASE, merge


class FakeTuner:
    """A Tuner whose one trial opens its run and dies without closing it, then ``error``."""

    def __init__(self, setup, error: BaseException | None = None):
        self.setup, self.error = setup, error
        self.child = None

    def fit(self):
        client = MlflowClient(self.setup.uri)
        tags = {"mlflow.parentRunId": self.setup.parent_run_id}
        self.child = client.create_run(self.setup.experiment_id, tags=tags).info.run_id
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def uri(tmp_path_factory):  # one store for the module: creating one takes seconds
    return f"sqlite:///{tmp_path_factory.mktemp('parent') / 'mlflow.db'}"


@pytest.fixture
def tuners(monkeypatch):
    """Ray is not started (one node), and Tune's Tuner is a FakeTuner raising ``error``."""
    made: list[FakeTuner] = []

    def install(error: BaseException | None = None) -> list[FakeTuner]:
        def make(setup, folder, restore, watch):
            made.append(FakeTuner(setup, error))
            return made[-1]

        monkeypatch.setattr(session_module, "make_tuner", make)
        return made

    monkeypatch.setattr(SweepSession, "start_ray", lambda self: 1)
    return install


@pytest.fixture
def session(tmp_path, uri, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sweep's folder and data under tmp_path

    def make(**extra) -> SweepSession:
        raw = merge(BASE, {"analysis": [{"step": "edm", "input": "train/loss"}], **extra})
        return SweepSession(load_spec(raw=raw), tracking_uri=uri, show=lambda text: None)

    return make


def status(s: SweepSession, run_id: str | None = None) -> tuple[str, str | None]:
    run = MlflowClient(s.uri).get_run(run_id or s.parent_run_id)
    return run.info.status, run.data.tags.get("dynsweep.error")


def test_a_finished_sweep_closes_its_parent_run_and_writes_its_manifest(
    session, tuners, monkeypatch
):
    made = tuners()
    monkeypatch.setattr("analysis.runner.analyze", lambda *a, **k: [])
    s = session()
    outcome = s.run()
    assert outcome.status == "FINISHED"
    assert status(s) == ("FINISHED", None)
    assert status(s, made[0].child)[0] == "FAILED"  # a trial run left open: its process died
    assert outcome.folder.is_file("dynsweep_sweep.json")
    assert outcome.setup.parent_run_id == s.parent_run_id


def test_a_broken_optuna_storage_fails_the_parent_run(session, monkeypatch):
    monkeypatch.setattr(SweepSession, "start_ray", lambda self: 1)
    s = session(
        search={"algorithm": "optuna", "storage": "postgresql://u@127.0.0.1:1/optuna"},
        num_samples=2,
    )
    with pytest.raises(Exception, match="127.0.0.1"):
        s.run()  # the real Tuner: its searcher connects to the storage
    state, error = status(s)
    assert state == "FAILED" and "127.0.0.1" in error


def test_tune_failing_fails_the_parent_run(session, tuners):
    made = tuners(RuntimeError("tune broke"))
    s = session()
    with pytest.raises(RuntimeError, match="tune broke"):
        s.run()
    assert status(s) == ("FAILED", "RuntimeError: tune broke")
    assert status(s, made[0].child)[0] == "FAILED"


@pytest.mark.parametrize("stage", ["summary", "analysis"])
def test_summary_or_analysis_failing_fails_the_parent_run(session, tuners, monkeypatch, stage):
    tuners()

    def broken(*args, **kwargs):
        raise ValueError(f"{stage} broke")

    where = {"summary": "orchestrator.summary.summarize_sweep", "analysis": "analysis.runner"}
    monkeypatch.setattr(where[stage] + ("" if stage == "summary" else ".analyze"), broken)
    s = session()
    with pytest.raises(ValueError, match=f"{stage} broke"):
        s.run()
    assert status(s) == ("FAILED", f"ValueError: {stage} broke")


def test_the_summary_is_shown_and_recorded_and_the_analysis_runs_while_the_parent_is_open(
    session, tuners, monkeypatch
):
    tuners()
    seen, shown = [], []
    monkeypatch.setattr("analysis.runner.analyze", lambda *a, **k: seen.append(status(s)[0]) or [])
    s = session()
    s.show = shown.append
    assert s.run().status == "FINISHED"
    assert seen == ["RUNNING"] and status(s) == ("FINISHED", None)
    assert "1 trials — 0 finished, 1 failed" in shown[0]
    assert shown[1].startswith("\nAnalysis")


def test_no_analysis_when_asked_not_to(session, tuners, monkeypatch):
    tuners()
    monkeypatch.setattr("analysis.runner.analyze", lambda *a, **k: pytest.fail("analysed"))
    s = session()
    s.analyze = False
    assert s.run().status == "FINISHED"


def test_ctrl_c_after_the_trials_marks_the_parent_killed(session, tuners, monkeypatch):
    tuners()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("orchestrator.summary.summarize_sweep", interrupted)
    s = session()
    with pytest.raises(KeyboardInterrupt):
        s.run()
    state, error = status(s)
    assert state == "KILLED" and "dynsweep resume" in error


def test_a_failure_before_the_parent_run_opens_leaves_no_run_open(session, tuners, monkeypatch):
    from dynsweep.errors import DataError

    tuners()

    def missing(spec):
        raise DataError("no data")

    monkeypatch.setattr(session_module, "prepare_data", missing)
    s = session()
    with pytest.raises(DataError, match="no data"):
        s.run()
    assert s.parent_run_id is None
    client = MlflowClient(s.uri)
    experiment = client.get_experiment_by_name(s.spec.experiment_name())
    running = [
        r for r in client.search_runs([experiment.experiment_id]) if r.info.status == "RUNNING"
    ]
    assert running == []


@pytest.mark.e2e
def test_mpi_train_closes_its_parent_run_as_a_sweep_does(tmp_path):
    """`dynsweep train` (one MPI rank, no mpiexec) whose trainer raises: the parent run ends
    FAILED with the error, by the session's own close."""
    import os
    import subprocess
    import sys

    from tests.helpers import store, sweep_runs, write_config

    cfg = write_config(tmp_path, trainer="flaky", config={"raise_at": 3}, stop={"iterations": 10})
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(cfg)],
        cwd=tmp_path, env=os.environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0 and "injected bug at step 3" in result.stderr
    (parent,), (child,) = sweep_runs(store(tmp_path))
    assert parent.info.status == "FAILED"
    assert parent.data.tags["dynsweep.error"] == "ValueError: injected bug at step 3"
    assert child.info.status == "FAILED"
