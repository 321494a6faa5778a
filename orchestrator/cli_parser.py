"""The arguments of the ``dynsweep`` commands (see :mod:`orchestrator.cli` for what they do)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynsweep import __version__
from dynsweep.uri import DEFAULT_URI


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show INFO messages of dynsweep, Ray and MLflow (default: warnings and errors)",
    )


def parser() -> argparse.ArgumentParser:
    """The ``dynsweep`` argument parser: every command, its arguments and their help."""
    parser = argparse.ArgumentParser(
        prog="dynsweep",
        description="Sweep trainers on Ray Tune, record training dynamics into MLflow, "
        "analyse the recorded trajectories.",
    )
    parser.add_argument("--version", action="version", version=f"dynsweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "sweep",
        help="run the experiment described by a YAML file",
        description="Run a sweep: validate CONFIG, run its trials on Ray Tune, "
        "log every trial to MLflow, then run its analysis steps.",
    )
    p.add_argument(
        "config",
        nargs="+",
        help="experiment YAML (e.g. configs/quickstart.yaml); several run as stages, in order, "
        "each after the one before has finished (a stage draws on an earlier one's runs "
        "with {runs: {experiment: …}})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set stop.iterations=50 (repeatable; the "
        "value is YAML: --set 'config.optimizer.lr={grid: [0.1, 0.01]}'; with several "
        "configs it applies to each, --set 2:KEY=VALUE to the second only)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved experiment, trial count and resources; start nothing",
    )
    p.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip the config's analysis steps (run them later with dynsweep analyze)",
    )
    p.add_argument(
        "--tracking-uri",
        help=f"MLflow tracking URI (default: {DEFAULT_URI}, or "
        "MLFLOW_TRACKING_URI, or tracking.uri of the config)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address (default: start Ray locally; 'auto' inside a cluster)",
    )
    p.add_argument(
        "--storage",
        help="where the sweep's state and checkpoints go: a folder, or s3://bucket/prefix, "
        "gs://… (default: storage of the config, dynsweep_runs)",
    )
    _add_verbose(p)
    _add_common(p)

    p = sub.add_parser(
        "resume",
        help="continue an interrupted sweep",
        description="Continue an interrupted sweep: finished trials are kept, "
        "unfinished ones continue from their last checkpoint in "
        "the same MLflow runs.",
    )
    p.add_argument(
        "sweep",
        help="sweep folder or URI (printed by 'sweep'), or an experiment name (its newest "
        "sweep under --storage)",
    )
    p.add_argument("--address", help="Ray cluster address")
    p.add_argument(
        "--storage", default="dynsweep_runs", help="where to look for a sweep given by name"
    )
    _add_verbose(p)
    _add_common(p)

    p = sub.add_parser("runs", help="print the trials of an experiment's sweep as a table")
    p.add_argument("experiment", help="MLflow experiment name (the config's name)")
    p.add_argument("--sweep", help="sweep run id or name (default: the newest)")
    p.add_argument("--sort", metavar="METRIC", help="sort by this metric")
    p.add_argument("--mode", choices=["min", "max"], default="min", help="sort order")
    p.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="keep trials whose param equals VALUE (repeatable)",
    )
    p.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    _add_common(p)

    p = sub.add_parser("analyze", help="run analysis steps on the finished trials of a sweep")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("config", nargs="?", help="experiment YAML whose 'analysis' steps to run")
    src.add_argument("--experiment", help="experiment name; runs the EDM step on train/loss")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--sweep", help="sweep run id or name (default: the newest)")
    p.add_argument("--force", action="store_true", help="recompute results that exist")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.add_argument("--address", help="Ray cluster address")
    _add_verbose(p)
    _add_common(p)

    p = sub.add_parser(
        "submit",
        help="submit a sweep to a Ray cluster (Ray Job, or a cluster-launcher YAML)",
        description="Run 'dynsweep sweep CONFIG --address auto' on a cluster: TARGET is the "
        "dashboard address of a running cluster (http://HEAD:8265; a Ray Job with this folder "
        "as working directory) or a cluster YAML of clusters/ (ray rsync-up + ray exec).",
    )
    p.add_argument("target", help="http://HEAD:8265 or clusters/NAME.yaml")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tracking-uri", help="tracking server the cluster's trials log to")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its logs")
    p.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    _add_verbose(p)  # here and in the sweep on the cluster
    _add_common(p)

    p = sub.add_parser(
        "train",
        help="one distributed training without Ray (mpiexec -n N dynsweep train CONFIG)",
        description="Train the one configuration of CONFIG on the ranks MPI started "
        "(torch.distributed from mpi4py's ranks; gloo on CPU, nccl on GPU), logging to MLflow "
        "from rank 0.",
    )
    p.add_argument("config", help="experiment YAML without search dimensions")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    _add_common(p)

    p = sub.add_parser("server", help="start a shared MLflow tracking server")
    p.add_argument("--backend-store-uri", default=DEFAULT_URI, help="sqlite or PostgreSQL URI")
    p.add_argument(
        "--artifacts-destination",
        default="./mlartifacts",
        help="folder (shared file system) or object-store URI for artifacts",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (0.0.0.0 for a cluster)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument(
        "--allowed-hosts",
        action="append",
        default=[],
        metavar="HOST[:PORT],…",
        help="Host headers to accept besides localhost and private IPs, e.g. the service name "
        "workers use (dynsweep-head-svc:5000); wildcards allowed; repeatable",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="server processes (MLflow's default: 4)"
    )
    _add_common(p)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {DEFAULT_URI})")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    _add_common(p)
    return parser
