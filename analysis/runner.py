"""Run analysis steps over every finished trial of a sweep, as Ray tasks.

Each task reads its input back from MLflow — one metric history, several aligned on their
common steps, a recorded trajectory (steps with ``input_kind = "trajectory"``) or the run's
final model (``input_kind = "model"``), or nothing (``input_kind = "dataset"``: the step reads
the dataset its params name) — and fits one step. The driver writes each result to
its run through :mod:`tracking` (the one MLflow writer): ``analysis/<name>/<metric>``
metrics, a JSON artifact per table, PNG figures, and a tag holding the hash of the step's
configuration, so that re-running skips what exists (unless ``force``). At the end the parent
run gets the sweep's table (one row per trial: its swept hyperparameters and every analysis
metric) and a plot of each analysis metric against each swept hyperparameter.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow.tracking import MlflowClient

import tracking
from analysis.io import find_runs, find_sweep, load_trajectory, local_artifact, metric_histories
from analysis.registry import get_analysis_step
from dynsweep import logs
from dynsweep.progress import Bar


@dataclass
class AnalysisOutcome:
    run_id: str
    run_name: str
    step: str
    metrics: dict[str, float]
    error: str | None = None
    skipped: bool = False  # an identical earlier result was kept


def step_name(spec) -> str:
    return spec.name or spec.step


def step_hash(spec) -> str:
    """Identifies a step's configuration (step, input, params) among earlier results."""
    blob = json.dumps([spec.step, spec.input, spec.params], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_input(kind: str, inputs, uri: str, run_id: str) -> tuple[Any, Any]:
    """(data, steps) of a step's input for one run."""
    if kind == "model":
        path = local_artifact(MlflowClient(uri), run_id, "model/model.pt")
        return torch.load(path, map_location="cpu", weights_only=True), None
    if kind == "dataset":  # the step reads the dataset itself (its params name it)
        return None, None
    if kind == "trajectory":
        name = inputs if isinstance(inputs, str) else inputs[0]
        trajectory = load_trajectory(run_id, name, uri=uri)
        return trajectory, trajectory.steps
    keys = [inputs] if isinstance(inputs, str) else list(inputs)
    steps, values = metric_histories(run_id, keys, uri=uri)
    return (values[keys[0]] if isinstance(inputs, str) else values), steps


def device_for(gpus: float) -> str:
    """The device a model step's task uses: ``cuda`` when its task was given GPUs."""
    return "cuda" if gpus > 0 else "cpu"


def _fit_one(step: str, params: dict[str, Any], inputs, uri: str, run_id: str):
    """Ray task: fit one step on one run's input."""
    try:
        cls = get_analysis_step(step)
        data, steps = load_input(getattr(cls, "input_kind", "metric"), inputs, uri, run_id)
        fit = cls(**params).fit
        extra = {"steps": steps} if "steps" in inspect.signature(fit).parameters else {}
        result = fit(data, **extra)
        return result.metrics, result.tables, result.figures, None
    except Exception as exc:  # reported per run (with its traceback); the other runs go on
        return (
            {},
            {},
            {"traceback.txt": traceback.format_exc().encode()},
            f"{type(exc).__name__}: {exc}",
        )


def analyze(
    experiment: str,
    steps,
    uri: str,
    sweep: str | None = None,
    data_dir: str | None = None,
    force: bool = False,
    gpus: float = 0.0,
) -> list[AnalysisOutcome]:
    """Run ``steps`` (a list of AnalysisStepSpec) on the finished runs of a sweep, then write
    the sweep's summary to its parent run.

    ``gpus``: GPUs per task of a step that uses a model (``fid``, ``elbo``: their model,
    sampling and feature extractor run on ``cuda`` there); the other steps take one CPU."""
    parent = find_sweep(experiment, sweep, uri)
    runs = find_runs(experiment, sweep=parent.info.run_id, status="FINISHED", uri=uri)
    if not ray.is_initialized():  # Ray's and MLflow's log levels as the CLI set them
        ray.init(include_dashboard=False, **logs.ray_init_options())
    task = ray.remote(num_cpus=1, max_retries=1)(_fit_one)
    on_device = task.options(num_gpus=gpus) if gpus > 0 else task
    outcomes, pending = [], {}
    for run in runs:
        for spec in steps:
            name, digest = step_name(spec), step_hash(spec)
            if not force and run.data.tags.get(tracking.analysis_tag(name)) == digest:
                prefix = f"analysis/{name}/"
                kept = {
                    k[len(prefix) :]: v for k, v in run.data.metrics.items() if k.startswith(prefix)
                }
                outcomes.append(
                    AnalysisOutcome(run.info.run_id, run.info.run_name, name, kept, skipped=True)
                )
                continue
            params, uses_model = _params(spec, data_dir, gpus, uri)
            remote = on_device if uses_model else task
            ref = remote.remote(spec.step, params, spec.input, uri, run.info.run_id)
            pending[ref] = (run, name, digest)
    with Bar("analysis", len(pending)) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run, name, digest = pending.pop(ready[0])
            metrics, tables, figures, error = ray.get(ready[0])
            if error is None:
                tracking.log_analysis(uri, run.info.run_id, name, metrics, tables, figures, digest)
            else:  # the traceback where the user finds it: analysis/<step>/traceback.txt
                tracking.log_analysis_error(uri, run.info.run_id, name, error, figures)
            outcomes.append(
                AnalysisOutcome(run.info.run_id, run.info.run_name, name, metrics, error)
            )
            bar.update()
    _summarise(uri, parent, experiment)
    return outcomes


def _summarise(uri: str, parent, experiment: str) -> None:
    from analysis.summary import sweep_table

    runs = find_runs(experiment, sweep=parent.info.run_id, status="FINISHED", uri=uri)
    csv_text, figures = sweep_table(runs)
    if csv_text:
        tracking.log_sweep_analysis(uri, parent.info.run_id, csv_text, figures)


def _params(
    spec, data_dir: str | None, gpus: float = 0.0, uri: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The step's parameters, with ``data_dir`` and (steps that run a model) ``device``
    filled in unless given; and whether the step's task needs the analysis GPUs."""
    params = dict(spec.params)
    cls = get_analysis_step(spec.step)
    accepted = inspect.signature(cls).parameters
    if data_dir and "data_dir" in accepted:
        params.setdefault("data_dir", str(Path(data_dir).resolve()))
    if uri and "tracking_uri" in accepted:  # steps that read other runs (fid's classifier)
        params.setdefault("tracking_uri", uri)
    uses_model = getattr(cls, "input_kind", "metric") == "model" and "device" in accepted
    if uses_model:
        params.setdefault("device", device_for(gpus))
    return params, uses_model
