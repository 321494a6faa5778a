"""Run references in experiment configs: ``run:RUN_ID/ARTIFACT_PATH`` anywhere in ``config``
(grid and choice values included) becomes the local path of that artifact, before Ray starts.

E.g. ``path_model: {grid: [run:3f2a…/model/model.pt, run:9c1b…/model/model.pt]}`` samples
around the curves of two ``paths`` runs. Artifacts on a remote store are downloaded once to
the local cache (see :func:`analysis.io.local_artifact`).
"""

from __future__ import annotations

from typing import Any

from dynsweep.errors import ConfigError, DataError

PREFIX = "run:"


def resolve(config: Any, uri: str, where: str = "config") -> Any:
    """``config`` with every run reference replaced by a local file path."""
    if isinstance(config, dict):
        return {k: resolve(v, uri, f"{where}.{k}") for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [resolve(v, uri, f"{where}.{i}") for i, v in enumerate(config)]
    if isinstance(config, str) and config.startswith(PREFIX):
        return _local(config, uri, where)
    return config


def _local(reference: str, uri: str, where: str) -> str:
    from mlflow.tracking import MlflowClient

    from analysis.io import local_artifact

    run_id, sep, artifact = reference[len(PREFIX) :].partition("/")
    if not run_id or not sep or not artifact:
        raise ConfigError(f"{where}: {reference!r}: expected run:RUN_ID/ARTIFACT_PATH")
    try:
        path = local_artifact(MlflowClient(uri), run_id, artifact)
    except DataError as exc:
        raise ConfigError(f"{where}: {reference!r}: {exc}") from None
    return str(path)
