"""Ray's Optuna searcher, made to resume a sweep whose study lives in a database.

Ray's ``OptunaSearch`` keeps its state in two places. Tune pickles the searcher (which trial
it asked for which Tune trial, which trials it has told) with its experiment state, at most
every ~10 s. An Optuna study on a database (or a journal file) is written at once, on every
``ask`` and ``tell``. After the driver is SIGKILLed the study can therefore be ahead of the
restored searcher:

- a trial told COMPLETE (or PRUNED/FAIL) just before the kill looks unfinished to the restored
  searcher; Tune runs it again (dynsweep reports the finished run's final metrics), and Ray's
  searcher reports and tells it again: ``UpdateFinishedTrialError``, the resume fails;
- a trial asked just before the kill stays RUNNING in the study for ever: Tune never saved
  the trial it was asked for, so nothing will continue it.

:class:`ResumableOptunaSearch` reconciles the two when Tune restores it: a trial the study
holds finished counts as told (it is not reported or told again); a RUNNING trial of this
sweep that the restored searcher does not know is ended as FAIL, with the reason in its user
attribute ``dynsweep.ended``. Each trial it asks carries the sweep (the parent MLflow run id)
and the Tune trial id (= the MLflow run's ``dynsweep.trial_id`` tag) as user attributes, so
another sweep's RUNNING trials of a shared study are never touched, and a study trial can be
matched to its MLflow run. A study held in memory is pickled with Tune's state, so the two
always agree there.
"""

from __future__ import annotations

import logging

import optuna
from ray.tune.search.optuna import OptunaSearch

from orchestrator.driver import kill_point
from tracking import tags as tag

log = logging.getLogger(__name__)

STALE = (
    "asked just before the driver died, before Tune saved the trial it was asked for; "
    "`dynsweep resume` asked a new trial instead"
)


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that resumes consistently with its study's storage (see module)."""

    def __init__(self, *args, sweep: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sweep = sweep

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if new and self._sweep:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr(tag.SWEEP, self._sweep)
            ot_trial.set_user_attr(tag.TRIAL, trial_id)
        kill_point("searcher_ask")  # test-only (see orchestrator.driver.kill_point)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:  # the study holds it finished: nothing to add
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if trial_id in self._completed_trials:  # told before the driver died: told once
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.reconcile()

    def reconcile(self) -> None:
        """Bring the restored searcher in line with its study (see module)."""
        study = self._ot_study
        if study is None:
            return
        tune_ids = {t.number: trial_id for trial_id, t in self._ot_trials.items()}
        sweep = getattr(self, "_sweep", None)
        for frozen in study.get_trials(deepcopy=False):
            trial_id = tune_ids.get(frozen.number)
            if trial_id is not None:
                if frozen.state.is_finished() and trial_id not in self._completed_trials:
                    log.info(
                        "Optuna trial %d (Tune trial %s) was told %s before the driver died; "
                        "it is not told again",
                        frozen.number,
                        trial_id,
                        frozen.state.name,
                    )
                    self._completed_trials.add(trial_id)
            elif (
                sweep
                and frozen.state == optuna.trial.TrialState.RUNNING
                and frozen.user_attrs.get(tag.SWEEP) == sweep
            ):
                study._storage.set_trial_user_attr(frozen._trial_id, tag.ENDED, STALE)
                study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                log.info("Optuna trial %d: FAIL (%s)", frozen.number, STALE)
