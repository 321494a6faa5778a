"""Run analysis steps over every finished trial of a sweep, as Ray tasks.

Each task reads its input (a metric history) back from MLflow and fits one step; the driver
writes every result to its run through :mod:`orchestrator.tracking` (the one MLflow writer)
as ``analysis/<step>/<metric>`` metrics plus a JSON artifact per table.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow.tracking import MlflowClient

from analysis.io import find_runs, local_artifact, metric_history
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
    """Ray task: fit one step on one run's input (a metric history, or its final model)."""
    try:
        cls = get_analysis_step(step)
        if getattr(cls, "input_kind", "metric") == "model":
            os.environ["MLFLOW_TRACKING_URI"] = uri  # for steps that read other runs
            path = local_artifact(MlflowClient(uri), run_id, "model/model.pt")
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            _, data = metric_history(run_id, key, uri=uri)
        result = cls(**params).fit(data)
        return result.metrics, result.tables, None
    except Exception as exc:  # reported per run; the other runs go on
        return {}, {}, f"{type(exc).__name__}: {exc}"


def analyze(
    experiment: str, steps, uri: str, sweep: str | None = None, data_dir: str | None = None
) -> list[AnalysisOutcome]:
    """Run ``steps`` (a list of AnalysisStepSpec) on the finished runs of a sweep.

    ``data_dir`` (the spec's, made absolute) is given to steps that take one (they rebuild
    datasets) unless their params name it."""
    runs = find_runs(experiment, sweep=sweep, status="FINISHED", uri=uri)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level="ERROR")
    task = ray.remote(num_cpus=1, max_retries=1)(_fit_one)
    jobs = [
        (
            run,
            spec,
            task.remote(spec.step, _params(spec, data_dir), spec.input, uri, run.info.run_id),
        )
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


def _params(spec, data_dir: str | None) -> dict[str, Any]:
    params = dict(spec.params)
    cls = get_analysis_step(spec.step)
    if data_dir and "data_dir" in inspect.signature(cls).parameters:
        params.setdefault("data_dir", str(Path(data_dir).resolve()))
    return params
