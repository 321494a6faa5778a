"""Logging for the command line and for the Ray workers of its sweeps (no heavy imports).

dynsweep's packages log through module loggers (``logging.getLogger(__name__)``); ``print`` is
for the CLI's own output (the trial table, the summary, the analysis lines). :func:`configure`,
called once by the CLI, sends those loggers to stderr in a plain format — WARNING and above,
INFO as well with ``--verbose`` — and sets Ray's and MLflow's loggers to match: their warnings
and errors always show, their INFO lines only with ``--verbose``.

The same set-up reaches the Ray workers (trials, analysis tasks) through the job's runtime
environment (:func:`ray_init_options`): MLflow reads ``MLFLOW_LOGGING_LEVEL`` when a worker
imports it, and Ray runs :func:`setup_worker` in each worker process before its first task
(``worker_process_setup_hook``), which sets the ``ray`` logger there (Ray Train's
"Checkpoint successfully created" is an INFO line of a trial's process).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

PACKAGES = ("dynsweep", "orchestrator", "tracking", "trainers", "analysis")
FORMAT = "%(levelname)s %(name)s: %(message)s"
LEVEL_ENV = "DYNSWEEP_LOG_LEVEL"  # tells setup_worker the level its driver chose
MLFLOW_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"  # read by mlflow when it is imported

_level = logging.WARNING  # chosen by configure(); WARNING when it was never called


class _Stderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record comes (a test's capture, a
    redirected stream), not as it was when the handler was made."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def level_name() -> str:
    return logging.getLevelName(_level)


def configure(verbose: bool = False) -> None:
    """Set up logging for this process: dynsweep's loggers to stderr (WARNING+, or INFO+ when
    ``verbose``), and Ray's and MLflow's levels to the same. Safe to call again."""
    global _level
    _level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)  # other libraries' warnings (propagating to root) look the same
    for name in PACKAGES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.NOTSET)
    if verbose:
        os.environ[MLFLOW_LEVEL_ENV] = "INFO"
    else:  # a level the user chose is kept
        os.environ.setdefault(MLFLOW_LEVEL_ENV, "WARNING")
        # Ray's autoscaler repeats "No available node types can fulfill resource request"
        # every half minute while a trial cannot be placed; the sweep says it once itself
        # (orchestrator.progress.PendingWatch). Read by ray when it is imported.
        os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    if "mlflow" in sys.modules:  # imported already: its level was read from the environment
        logging.getLogger("mlflow").setLevel(os.environ[MLFLOW_LEVEL_ENV].upper())
    if "ray" in sys.modules:  # (importing ray sets its logger to INFO: see apply_ray_level)
        apply_ray_level()


def apply_ray_level(*loggers: str) -> None:
    """Set the ``ray`` logger, and ``loggers`` (Ray's modules that set their own level), to the
    chosen level. Call it after importing ray, which sets its logger to INFO (``ray.init`` sets
    it from ``logging_level``)."""
    for name in ("ray", *loggers):
        logging.getLogger(name).setLevel(_level)


def ray_init_options() -> dict[str, Any]:
    """Keyword arguments for ``ray.init`` that give the driver's ``ray`` logger, and every
    worker process of the job (trials, analysis tasks), the level chosen by :func:`configure`."""
    return {
        "logging_level": _level,
        "runtime_env": {
            "env_vars": {
                LEVEL_ENV: level_name(),
                MLFLOW_LEVEL_ENV: os.environ.get(MLFLOW_LEVEL_ENV, level_name()),
            },
            "worker_process_setup_hook": f"{__name__}.setup_worker",
        },
    }


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: the driver's logging set-up, in a worker."""
    configure(verbose=os.environ.get(LEVEL_ENV, "WARNING").upper() == "INFO")
