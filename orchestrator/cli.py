"""The ``dynsweep`` command line: parse, validate, call the orchestrator; nothing else here.

User errors (bad config, missing file, unreachable store) print one message and exit 2;
``--debug`` shows the traceback as well. Standard output and error carry dynsweep's own output;
log messages (dynsweep's, Ray's, MLflow's) show from WARNING up, from INFO up with
``--verbose`` (see :mod:`dynsweep.logs`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dynsweep import __version__, logs
from dynsweep.errors import UserError

DEFAULT_URI = "sqlite:///mlflow.db"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show INFO messages of dynsweep, Ray and MLflow (default: warnings and errors)",
    )


def _parser() -> argparse.ArgumentParser:
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
    _add_common(p)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {DEFAULT_URI})")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    _add_common(p)
    return parser


def _uri(arg: str | None) -> str:
    from tracking import resolve_uri

    return resolve_uri(arg or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)


def _finish_sweep(outcome, run_analysis: bool = True) -> int:
    from analysis.runner import analyze
    from orchestrator.summary import sweep_summary
    from orchestrator.sweep import finish
    from tracking.secrets import redact

    print(redact(sweep_summary(outcome)))
    if outcome.status == "FAILED":
        print(f"dynsweep: the sweep failed: {outcome.error}", file=sys.stderr)
        return 1
    if outcome.status != "FINISHED":
        return 130
    spec = outcome.setup.spec
    if spec.analysis and run_analysis:
        _print_analysis(
            analyze(
                spec.experiment_name(),
                spec.analysis,
                outcome.setup.uri,
                sweep=outcome.setup.parent_run_id,
                data_dir=outcome.setup.data_dir,
                gpus=spec.resources.analysis_gpus,
            )
        )
    finish(outcome)
    if spec.search.storage:
        from orchestrator.registry import study_name

        where = spec.search.storage.removeprefix("journal:")
        print(
            f"Optuna study {study_name(spec)!r} is kept in {spec.search.storage}; "
            f"browse it with: optuna-dashboard {where}"
        )
    return 0


def _print_analysis(outcomes, shown_metrics: int = 6) -> None:
    print("\nAnalysis (written to each run as analysis/<step>/<metric>; the sweep's table and")
    print("plots against each hyperparameter on its parent run, under analysis/):")
    for o in outcomes:
        items = list(o.metrics.items())
        shown = o.error or "  ".join(f"{k} = {v:.4g}" for k, v in items[:shown_metrics])
        more = f"  (+{len(items) - shown_metrics} more)" if len(items) > shown_metrics else ""
        kept = " (kept: same step config)" if o.skipped else ""
        print(f"  {o.run_name:<40} {o.step:<8} {shown}{more}{kept}")


def _cmd_sweep(args) -> int:
    from orchestrator import chain, sweep
    from orchestrator.spec import load_spec

    overrides = [*args.overrides, *([f"storage={args.storage}"] if args.storage else [])]
    # every stage valid before any starts; --set N:KEY=VALUE overrides stage N only
    specs = [
        load_spec(path, chain.stage_overrides(overrides, i + 1, len(args.config)))
        for i, path in enumerate(args.config)
    ]
    if args.dry_run:
        from orchestrator.plan import plan

        print("\n\n".join(plan(spec) for spec in specs))
        return 0
    for i, spec in enumerate(specs):
        if len(specs) > 1:
            print(f"\n== stage {i + 1}/{len(specs)}: {args.config[i]} ==")
        outcome = sweep.run(spec, address=args.address, tracking_uri=args.tracking_uri)
        status = _finish_sweep(outcome, args.analyze)
        if status != 0:
            if i + 1 < len(specs):
                print(
                    f"stage {i + 1} did not finish; not starting: {' '.join(args.config[i + 1 :])}"
                )
            return status
    return 0


def _cmd_resume(args) -> int:
    from orchestrator import sweep

    return _finish_sweep(sweep.resume(args.sweep, address=args.address, storage=args.storage))


def _cmd_runs(args) -> int:
    from analysis.io import find_runs
    from orchestrator.summary import format_table, rows, sort_rows, write_csv

    runs = find_runs(args.experiment, sweep=args.sweep, uri=_uri(args.tracking_uri))
    for item in args.filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--filter {item!r}: expected PARAM=VALUE")
        runs = [r for r in runs if r.data.params.get(key) == value]
    columns, table = rows(runs)
    if args.sort:
        table = sort_rows(table, args.sort, args.mode)
    print(format_table(columns, table))
    if args.csv:
        write_csv(args.csv, columns, table)
        print(f"wrote {args.csv}")
    return 0


def _cmd_analyze(args) -> int:
    from analysis.runner import analyze
    from orchestrator.devices import check_local
    from orchestrator.spec import AnalysisStepSpec, load_spec
    from orchestrator.sweep import init_ray

    gpus = 0.0
    if args.config:
        spec = load_spec(args.config, args.overrides)
        experiment, steps = spec.experiment_name(), spec.analysis
        uri = _uri(args.tracking_uri or spec.tracking.uri)
        data_dir, gpus = spec.data_dir, spec.resources.analysis_gpus
        if not steps:
            raise UserError(f"{args.config}: has no 'analysis' steps")
        check_local(spec, args.address, trials=False)
    else:
        experiment, steps = args.experiment, (AnalysisStepSpec(step="edm"),)
        uri = _uri(args.tracking_uri)
        data_dir = "data"
    init_ray(args.address)
    outcomes = analyze(
        experiment, steps, uri, sweep=args.sweep, data_dir=data_dir, force=args.force, gpus=gpus
    )
    _print_analysis(outcomes)
    return 0


def _cmd_ui(args) -> int:
    uri = _uri(args.tracking_uri)
    mlflow = shutil.which("mlflow") or "mlflow"
    cmd = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///") :]).parent / "mlartifacts"
        cmd += ["--default-artifact-root", root.resolve().as_uri()]
    print(f"MLflow UI for {uri}: http://{args.host}:{args.port}  (Ctrl+C to stop)", flush=True)
    return subprocess.call(cmd)


def _cmd_submit(args) -> int:
    from orchestrator.cluster import submit

    submit(
        args.target,
        args.config,
        args.overrides,
        args.tracking_uri,
        args.wait,
        args.timeout,
        verbose=args.verbose,
    )
    return 0


def _cmd_train(args) -> int:
    from orchestrator.mpi import train_mpi

    return train_mpi(args.config, args.overrides, args.tracking_uri)


def _cmd_server(args) -> int:
    from orchestrator.cluster import server_command

    cmd = server_command(args.backend_store_uri, args.artifacts_destination, args.host, args.port)
    print(f"MLflow tracking server: http://{args.host}:{args.port}  (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost"):
        print("note: listening beyond this machine; keep the port inside the cluster network")
    return subprocess.call(cmd)


COMMANDS = {
    "sweep": _cmd_sweep,
    "resume": _cmd_resume,
    "runs": _cmd_runs,
    "analyze": _cmd_analyze,
    "ui": _cmd_ui,
    "submit": _cmd_submit,
    "server": _cmd_server,
    "train": _cmd_train,
}


# Commands that hand over to MLflow's own server, whose messages are left as MLflow sets them.
OWN_LOGGING = {"ui", "server"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in OWN_LOGGING:
        logs.configure(verbose=getattr(args, "verbose", False))
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        if args.debug:
            raise
        from tracking.secrets import redact

        print(f"dynsweep {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
