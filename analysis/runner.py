"""Run analysis steps over every finished trial of a sweep, as Ray tasks.

Each task reads its input (a metric history) back from MLflow and fits one step; the driver
writes every result to its run through :mod:`orchestrator.tracking` (the one MLflow writer)
as ``analysis/<step>/<metric>`` metrics plus a JSON artifact per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from analysis.io import find_runs, metric_history
from orchestrator import tracking
from orchestrator.registry import get_analysis_step


@dataclass
class AnalysisOutcome:
    run_id: str
    run_name: str
    step: str
    metrics: dict[str, float]
    error: str | None = None


def _fit_one(step: str, params: dict[str, Any], key: str, uri: str, run_id: str):
    """Ray task: fit one step on one run's metric history."""
    try:
        _, values = metric_history(run_id, key, uri=uri)
        result = get_analysis_step(step)(**params).fit(values)
        return result.metrics, result.tables, None
    except Exception as exc:  # reported per run; the other runs go on
        return {}, {}, f"{type(exc).__name__}: {exc}"


def analyze(experiment: str, steps, uri: str, sweep: str | None = None) -> list[AnalysisOutcome]:
    """Run ``steps`` (a list of AnalysisStepSpec) on the finished runs of a sweep."""
    runs = find_runs(experiment, sweep=sweep, status="FINISHED", uri=uri)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="ERROR")
    task = ray.remote(num_cpus=1, max_retries=1)(_fit_one)
    jobs = [
        (run, spec, task.remote(spec.step, dict(spec.params), spec.input, uri, run.info.run_id))
        for run in runs
        for spec in steps
    ]
    outcomes = []
    for run, spec, ref in jobs:
        metrics, tables, error = ray.get(ref)
        if error is None:
            tracking.log_analysis(uri, run.info.run_id, spec.step, metrics, tables)
        outcomes.append(
            AnalysisOutcome(run.info.run_id, run.info.run_name, spec.step, metrics, error)
        )
    return outcomes
