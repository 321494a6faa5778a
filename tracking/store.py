"""Stores, experiments, sweep (parent) runs, statuses and analysis results in MLflow."""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dynsweep import __version__
from dynsweep.errors import ConfigError
from tracking import tags as tag
from tracking.secrets import redact, redact_obj, redact_values

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
T = TypeVar("T")


def retry_if_locked(fn: Callable[[], T], attempts: int = 8) -> T:
    """``fn()``, called again (up to ``attempts`` times, pauses doubling from 50 ms) while it
    fails with sqlite's "database is locked" (several trials write to one file); any other
    error is raised at once."""
    for i in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i)
    raise AssertionError("unreachable")


def with_sql_driver(uri: str) -> str:
    """``postgresql://…`` with the driver the ``postgres`` extra installs (psycopg 3).

    A plain ``postgresql://`` names no driver: SQLAlchemy 2.1 then picks psycopg 3, but 2.0
    (which MLflow's bounds allow) picks psycopg2. Where psycopg2 is missing and psycopg is
    installed, the URI names ``postgresql+psycopg://``; every other URI is returned as it is."""
    import importlib.util

    if not uri.startswith("postgresql://"):
        return uri
    if importlib.util.find_spec("psycopg2") or not importlib.util.find_spec("psycopg"):
        return uri
    return "postgresql+psycopg://" + uri[len("postgresql://") :]


def tracking_uri(flag: str | None = None, config: str | None = None) -> str:
    """The tracking URI in the one order of :func:`dynsweep.uri.choose_uri` (flag, then
    ``MLFLOW_TRACKING_URI``, then the config's, then ``./mlflow.db``), made absolute."""
    from dynsweep.uri import choose_uri

    return resolve_uri(choose_uri(flag, config))


def resolve_uri(uri: str, base: Path | None = None) -> str:
    """Make a relative sqlite/file URI absolute (trials run in other working directories);
    a ``postgresql://`` URI gets the installed driver (:func:`with_sql_driver`)."""
    uri = with_sql_driver(uri)
    base = Path.cwd() if base is None else base
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((base / uri[len("sqlite:///") :]).resolve())
    if "://" not in uri:
        return str((base / uri).resolve())
    return uri


def default_artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside it in ``mlartifacts/``; servers decide their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def artifact_location(uri: str, experiment_id: str) -> str | None:
    """Where the artifacts of the experiment's runs go (a server's proxy: ``mlflow-artifacts:``)."""
    return MlflowClient(uri).get_experiment(experiment_id).artifact_location


def check_reachable(uri: str) -> None:
    """Raise a plain :class:`ConfigError` if the tracking store cannot be used."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise ConfigError(f"tracking.uri: folder {folder} of {uri} does not exist")
        return
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(
                f"tracking.uri: cannot reach the MLflow server at {uri} ({exc})"
            ) from None
        raise ConfigError(f"tracking.uri: {uri} did not answer as an MLflow server")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise ConfigError(f"tracking.uri: cannot use tracking store {uri} ({exc})") from None


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings → ``{"a.b.c": "value"}`` (lists kept as their JSON text)."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj if isinstance(obj, str) else json.dumps(obj)
    return out


def git_sha(cwd: Path | None = None) -> str:
    """Commit of the experiment's repository (the working directory), else of dynsweep's."""
    for folder in (cwd or Path.cwd(), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown"


def environment_tags() -> dict[str, str]:
    import mlflow
    import ray
    import torch

    return {
        tag.VERSION: __version__,
        tag.PYTHON: platform.python_version(),
        tag.TORCH: torch.__version__,
        tag.RAY: ray.__version__,
        tag.MLFLOW: mlflow.__version__,
    }


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = [Param(k, v) for k, v in redact_values(params, 6000).items()]
    for chunk in _chunks(items, MAX_PARAMS):
        retry_if_locked(lambda c=chunk: client.log_batch(run_id, params=c))


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    items = [RunTag(k, v) for k, v in redact_values(tags, 5000).items()]
    for chunk in _chunks(items, MAX_TAGS):
        retry_if_locked(lambda c=chunk: client.log_batch(run_id, tags=c))


def ensure_experiment(uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it (artifacts beside a sqlite store)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_root(uri))
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def start_sweep_run(
    uri: str, experiment_id: str, run_name: str, spec: dict[str, Any], tags: dict[str, str]
) -> str:
    """Create the parent run of a sweep: resolved spec as artifact and as flattened params."""
    client = MlflowClient(uri)
    run = client.create_run(
        experiment_id, run_name=run_name, tags=redact_obj({tag.ROLE: "sweep", **tags})
    )
    log_params(client, run.info.run_id, flatten({k: v for k, v in spec.items() if k != "config"}))
    client.log_dict(run.info.run_id, redact_obj(spec), "spec.json")
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str, error: str | None = None) -> None:
    """End one run with ``status``; ``error``: its ``dynsweep.error`` tag and MLflow note."""
    client = MlflowClient(uri)
    if error:
        set_tags(client, run_id, {tag.ERROR: error, tag.NOTE: error})
    retry_if_locked(lambda: client.set_terminated(run_id, status=status))


def reopen_run(uri: str, run_id: str) -> None:
    """Mark a KILLED/FAILED run RUNNING again (a resumed sweep continues it)."""
    retry_if_locked(lambda: MlflowClient(uri).update_run(run_id, status="RUNNING"))


def child_runs(uri: str, experiment_id: str, parent_id: str) -> list:
    return MlflowClient(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag.PARENT}` = '{parent_id}'",
        max_results=50_000,
    )


def end_unfinished_children(uri: str, experiment_id: str, parent_id: str, status: str) -> int:
    """End with ``status`` every child run of ``parent_id`` still RUNNING; return how many."""
    n = 0
    for run in child_runs(uri, experiment_id, parent_id):
        if run.info.status == "RUNNING":
            end_run(uri, run.info.run_id, status)
            n += 1
    return n


def log_summary(uri: str, run_id: str, metrics: dict[str, float], table: dict[str, list]) -> None:
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for chunk in _chunks(items, MAX_METRICS):
        retry_if_locked(lambda c=chunk: client.log_batch(run_id, metrics=c))
    # (replaces the table of an earlier attempt)
    client.log_dict(run_id, redact_obj(table), "trials.json")


def analysis_tag(step: str) -> str:
    """The tag that holds the configuration hash of a run's ``step`` result."""
    return tag.analysis(step)


def log_analysis(
    uri: str,
    run_id: str,
    step: str,
    metrics: dict[str, float],
    tables: dict[str, Any] | None = None,
    figures: dict[str, bytes] | None = None,
    digest: str | None = None,
) -> None:
    """Write an analysis step's result to a run: ``analysis/<step>/<name>`` metrics, tables
    (JSON) and figures (PNG) under ``analysis/<step>/``, and the step's configuration hash."""
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    items = [Metric(f"analysis/{step}/{k}", float(v), now, 0) for k, v in metrics.items()]
    for chunk in _chunks(items, MAX_METRICS):
        retry_if_locked(lambda c=chunk: client.log_batch(run_id, metrics=c))
    for name, obj in (tables or {}).items():
        client.log_dict(run_id, redact_obj(obj), f"analysis/{step}/{name}.json")
    _log_files(client, run_id, f"analysis/{step}", figures or {})
    if digest is not None:
        set_tags(client, run_id, {analysis_tag(step): digest})


def log_analysis_error(
    uri: str, run_id: str, step: str, error: str, files: dict[str, bytes] | None = None
) -> None:
    """An analysis step that failed on a run: its message in the tag
    ``dynsweep.analysis.<step>.error`` and its traceback as ``analysis/<step>/traceback.txt``
    (the run itself keeps its status: the training finished)."""
    client = MlflowClient(uri)
    set_tags(client, run_id, {f"{analysis_tag(step)}.error": error})
    texts = {name: redact(data.decode()).encode() for name, data in (files or {}).items()}
    _log_files(client, run_id, f"analysis/{step}", texts)


def log_sweep_analysis(uri: str, run_id: str, csv_text: str, figures: dict[str, bytes]) -> None:
    """The sweep's analysis table (``analysis/summary.csv``) and plots on its parent run."""
    client = MlflowClient(uri)
    client.log_text(run_id, csv_text, "analysis/summary.csv")
    _log_files(client, run_id, "analysis", figures)


def _log_files(client: MlflowClient, run_id: str, folder: str, files: dict[str, bytes]) -> None:
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="dynsweep-analysis-") as tmp:
        for name, data in files.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            retry_if_locked(lambda p=path: client.log_artifact(run_id, str(p), folder))
