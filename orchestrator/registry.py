"""Registries: stable names → factories, imported lazily (nothing heavy at config-read time).

``SEARCHERS`` and ``SCHEDULERS`` build Ray Tune search algorithms and trial schedulers from an
:class:`~orchestrator.spec.ExperimentSpec`. (Analysis steps: :mod:`analysis.registry`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import space

if TYPE_CHECKING:
    from orchestrator.spec import ExperimentSpec


def _basic_variants(spec: ExperimentSpec, sweep: str | None = None) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies max_concurrent_trials only to Searchers; this generator takes it itself.
    return BasicVariantGenerator(
        random_state=spec.search.seed, max_concurrent=spec.max_concurrent_trials or 0
    )


def _optuna(spec: ExperimentSpec, sweep: str | None = None) -> Any:
    import optuna

    from orchestrator.search import ResumableOptunaSearch

    objectives = spec.search.objectives
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    stored = {}
    if spec.search.storage:
        stored = {"storage": optuna_storage(spec.search.storage), "study_name": study_name(spec)}
    if objectives:  # multi-objective: the searcher owns the metrics, Tune's own metric is unset
        return ResumableOptunaSearch(
            metric=list(objectives),
            mode=list(objectives.values()),
            sampler=sampler,
            sweep=sweep,
            **stored,
        )
    return ResumableOptunaSearch(sampler=sampler, sweep=sweep, **stored)


def study_name(spec: ExperimentSpec) -> str:
    return spec.search.study_name or spec.experiment_name()


def optuna_storage(uri: str) -> Any:
    """An Optuna storage from a URI: ``journal:PATH`` (a journal file) or an RDB URL."""
    import optuna

    if uri.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(uri[len("journal:") :]))
    from tracking import with_sql_driver

    return optuna.storages.RDBStorage(with_sql_driver(uri))


SEARCHERS = {
    "grid": _basic_variants,
    "random": _basic_variants,
    "optuna": _optuna,
}


def _fifo(spec: ExperimentSpec) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(spec: ExperimentSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        max_t=spec.stop.iterations,
        grace_period=min(spec.scheduler.grace_period, spec.stop.iterations),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _pbt(spec: ExperimentSpec) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    parsed = space.parse(spec.config)
    mutations: dict[str, Any] = {}
    for path, dom in space.domains(parsed):
        if dom.kind == "grid":
            continue
        node = mutations.setdefault("config", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = dom.to_tune()
    return PopulationBasedTraining(
        time_attr="step",
        perturbation_interval=spec.scheduler.perturbation_interval,
        hyperparam_mutations=mutations,
    )


SCHEDULERS = {
    "fifo": _fifo,
    "asha": _asha,
    "pbt": _pbt,
}


def make_searcher(spec: ExperimentSpec, sweep: str | None = None) -> Any:
    """The search algorithm of ``spec``; ``sweep`` (the parent MLflow run id) marks the trials
    an Optuna study holds, so that ``resume`` can tell this sweep's trials from others'."""
    return SEARCHERS[spec.search.algorithm](spec, sweep)


def make_scheduler(spec: ExperimentSpec) -> Any:
    return SCHEDULERS[spec.scheduler.name](spec)
