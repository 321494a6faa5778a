"""ResumableOptunaSearch restored from a state older than its study (no Ray started): what the
driver did between Tune's last save and its death is kept, not redone."""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from orchestrator.search import ResumableOptunaSearch

RUNNING, COMPLETE, FAIL = (
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
)


def searcher(storage: str, sweep: str = "sweep-a") -> ResumableOptunaSearch:
    return ResumableOptunaSearch(
        space={"x": tune.uniform(0, 1)},
        metric="loss",
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=0),
        storage=optuna.storages.RDBStorage(storage),
        study_name="s",
        sweep=sweep,
    )


def states(storage: str) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_a_trial_told_after_the_save_is_not_told_again(storage, tmp_path):
    first = searcher(storage)
    first.suggest("a")
    first.suggest("b")
    first.save(str(tmp_path / "state.pkl"))  # Tune's last save: a and b running
    first.on_trial_result("a", {"loss": 0.5, "training_iteration": 1})
    first.on_trial_complete("a", {"loss": 0.4})  # told; then the driver dies
    assert states(storage) == ["COMPLETE", "RUNNING"]  # the study is ahead of the saved state

    resumed = searcher(storage)
    resumed.restore(str(tmp_path / "state.pkl"))
    # Tune runs `a` again: dynsweep reports the finished run's metrics; nothing is raised and
    # the study keeps the first value.
    resumed.on_trial_result("a", {"loss": 0.4, "training_iteration": 2})
    resumed.on_trial_complete("a", {"loss": 0.3})
    resumed.on_trial_complete("b", {"loss": 0.2})  # `b` continued: told once, at its end
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.state, t.value) for t in study.trials] == [(COMPLETE, 0.4), (COMPLETE, 0.2)]
    assert [t.user_attrs["dynsweep.trial_id"] for t in study.trials] == ["a", "b"]


def test_without_reconciling_the_resume_fails_as_reported(storage, tmp_path, monkeypatch):
    """The failure of issue 29, on Ray's own searcher's behaviour (reconcile switched off)."""
    first = searcher(storage)
    first.suggest("a")
    first.save(str(tmp_path / "state.pkl"))
    first.on_trial_complete("a", {"loss": 0.4})
    monkeypatch.setattr(ResumableOptunaSearch, "reconcile", lambda self: None)
    resumed = searcher(storage)
    resumed.restore(str(tmp_path / "state.pkl"))
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        resumed.on_trial_result("a", {"loss": 0.4, "training_iteration": 2})


def test_a_trial_asked_after_the_save_ends_as_fail(storage, tmp_path):
    first = searcher(storage)
    first.suggest("a")
    first.save(str(tmp_path / "state.pkl"))
    first.suggest("c")  # asked; Tune never saved trial `c`
    other = searcher(storage, sweep="sweep-b")  # another sweep on the same study
    other.suggest("z")

    resumed = searcher(storage)
    resumed.restore(str(tmp_path / "state.pkl"))
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state for t in study.trials] == [RUNNING, FAIL, RUNNING]
    stale = study.trials[1]
    assert (
        stale.user_attrs["dynsweep.sweep"] == "sweep-a"
        and "driver died" in stale.user_attrs["dynsweep.ended"]
    )
    assert study.trials[2].user_attrs["dynsweep.sweep"] == "sweep-b"  # not this sweep's: untouched
    resumed.suggest("d")  # Tune asks for the trial it lost
    resumed.on_trial_complete("a", {"loss": 0.3})
    resumed.on_trial_complete("d", {"loss": 0.1})
    assert states(storage) == ["COMPLETE", "FAIL", "RUNNING", "COMPLETE"]
