"""Reading runs, metric histories and trajectories back from MLflow (the only MLflow reader)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from dynsweep.errors import DataError, UserError
from tracking import tags as tag
from trainers.trajectory import Trajectory, read_trajectory


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded store ``./mlflow.db``
    (:func:`dynsweep.uri.choose_uri` with no flag and no config)."""
    from tracking import tracking_uri

    return tracking_uri()


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(
            f"experiment {experiment!r} not found in {client.tracking_uri}; "
            f"experiments there: {', '.join(names) or 'none'}"
        )
    return exp.experiment_id


def _sweeps(client: MlflowClient, experiment_id: str) -> list[Run]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag.ROLE}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=10_000,
    )


def find_sweeps(experiment: str, uri: str | None = None) -> list[Run]:
    """The sweep (parent) runs of ``experiment``, newest first."""
    client = MlflowClient(uri or default_uri())
    return _sweeps(client, _experiment_id(client, experiment))


def find_sweep(experiment: str, sweep: str | None = None, uri: str | None = None) -> Run:
    """The parent run of one sweep of ``experiment``: ``sweep`` (a run id or name) or the
    newest."""
    client = MlflowClient(uri or default_uri())
    sweeps = _sweeps(client, _experiment_id(client, experiment))
    if not sweeps:
        raise UserError(f"experiment {experiment!r} has no dynsweep sweeps")
    if sweep is None:
        return sweeps[0]
    match = [s for s in sweeps if sweep in (s.info.run_id, s.info.run_name)]
    if not match:
        raise UserError(f"no sweep {sweep!r} in experiment {experiment!r}")
    return match[0]


def find_runs(
    experiment: str, sweep: str | None = None, status: str | None = None, uri: str | None = None
) -> list[Run]:
    """The trial runs of one sweep of ``experiment`` (default: its newest sweep).

    ``sweep`` is a parent run id or run name; ``status`` filters (e.g. ``"FINISHED"``).
    """
    client = MlflowClient(uri or default_uri())
    parent = find_sweep(experiment, sweep, uri)
    exp_id = parent.info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    runs = client.search_runs([exp_id], filter_string=query, max_results=50_000)
    return sorted(runs, key=lambda r: r.info.run_name or "")


def metric_histories(
    run_id: str, keys: list[str], uri: str | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Several metrics of a run on the steps they all have: ``(steps, {key: values})``."""
    histories = {k: metric_history(run_id, k, uri) for k in keys}
    common = histories[keys[0]][0]
    for steps, _ in histories.values():
        common = np.intersect1d(common, steps)
    if len(common) == 0:
        raise DataError(f"run {run_id}: metrics {keys} share no step")
    out = {}
    for key, (steps, values) in histories.items():
        last = {s: v for s, v in zip(steps, values)}  # a step logged twice: its last value
        out[key] = np.array([last[s] for s in common])
    return common, out


def metric_history(run_id: str, key: str, uri: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of metric ``key`` of a run, sorted by step."""
    client = MlflowClient(uri or default_uri())
    points = client.get_metric_history(run_id, key)
    if not points:
        raise DataError(f"run {run_id} has no metric {key!r}")
    points.sort(key=lambda m: (m.step, m.timestamp))
    steps = np.array([m.step for m in points], dtype=np.int64)
    values = np.array([m.value for m in points], dtype=float)
    return steps, values


def load_trajectory(
    run_id: str, name: str, steps: slice | None = None, columns=None, uri: str | None = None
) -> Trajectory:
    """A recorded trajectory of a run: ``values[i]`` recorded at ``steps[i]``.

    Only the chunks holding the rows selected by ``steps`` (a slice over step numbers) are
    read (uncompressed ones are memory-mapped); ``columns`` picks labelled blocks (e.g.
    ``["layers.1.0.weight"]``) or a slice of flat columns. Artifacts on a remote store are
    downloaded once to a local cache first.
    """
    client = MlflowClient(uri or default_uri())
    folder = local_artifact(client, run_id, f"trajectories/{name}")
    return read_trajectory(folder, steps=steps, columns=columns)


def local_artifact(client: MlflowClient, run_id: str, path: str) -> Path:
    """A local path of a run's artifact: read in place from a file store, else downloaded
    once into ``$DYNSWEEP_CACHE`` (default ``~/.cache/dynsweep``)."""
    try:
        root = client.get_run(run_id).info.artifact_uri
    except Exception as exc:
        raise DataError(f"run {run_id}: not found in {client.tracking_uri} ({exc})") from exc
    parsed = urlparse(root)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path)) / path
        if not local.exists():
            raise DataError(f"run {run_id} has no artifact {path!r} (looked in {local})")
        return local
    cache = Path(os.environ.get("DYNSWEEP_CACHE", Path.home() / ".cache" / "dynsweep"))
    target = cache / "artifacts" / run_id / path
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MLflow puts a downloaded folder under its last name: fetch it into a scratch folder
        # beside the target, then rename (a reader never sees half a download).
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
            try:
                got = client.download_artifacts(run_id, path, scratch)
            except Exception as exc:
                raise DataError(f"run {run_id} has no artifact {path!r} ({exc})") from exc
            os.replace(got, target)
    return target
