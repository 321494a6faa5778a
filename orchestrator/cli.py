"""The ``dynsweep`` command line: parse, validate, call the orchestrator; nothing else here.

User errors (bad config, missing file, unreachable store) print one message and exit 2;
``--debug`` shows the traceback as well. Standard output and error carry dynsweep's own output;
log messages (dynsweep's, Ray's, MLflow's) show from WARNING up, from INFO up with
``--verbose`` (see :mod:`dynsweep.logs`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dynsweep import logs
from dynsweep.errors import UserError
from orchestrator.cli_parser import parser


def _uri(flag: str | None, config: str | None = None) -> str:
    from tracking import tracking_uri

    return tracking_uri(flag, config)


def _exit_status(outcome) -> int:
    if outcome.status == "FAILED":
        print(f"dynsweep: the sweep failed: {outcome.error}", file=sys.stderr)
        return 1
    if outcome.status != "FINISHED":
        return 130
    spec = outcome.setup.spec
    if spec.search.storage:
        from orchestrator.registry import study_name

        where = spec.search.storage.removeprefix("journal:")
        print(
            f"Optuna study {study_name(spec)!r} is kept in {spec.search.storage}; "
            f"browse it with: optuna-dashboard {where}"
        )
    return 0


def _print_analysis(outcomes) -> None:
    from orchestrator.summary import analysis_text

    print(analysis_text(outcomes))


def _cmd_sweep(args) -> int:
    from orchestrator import chain
    from orchestrator.session import SweepSession
    from orchestrator.spec import load_spec

    overrides = [*args.overrides, *([f"storage={args.storage}"] if args.storage else [])]
    # every stage valid before any starts; --set N:KEY=VALUE overrides stage N only
    specs = [
        load_spec(path, chain.stage_overrides(overrides, i + 1, len(args.config)))
        for i, path in enumerate(args.config)
    ]
    if args.dry_run:
        from orchestrator.plan import plan

        print("\n\n".join(plan(spec, args.tracking_uri) for spec in specs))
        return 0
    for i, spec in enumerate(specs):
        if len(specs) > 1:
            print(f"\n== stage {i + 1}/{len(specs)}: {args.config[i]} ==")
        session = SweepSession(
            spec, address=args.address, tracking_uri=args.tracking_uri, analyze=args.analyze
        )
        outcome = session.run()
        status = _exit_status(outcome)
        if status != 0:
            if i + 1 < len(specs):
                print(
                    f"stage {i + 1} did not finish; not starting: {' '.join(args.config[i + 1 :])}"
                )
            return status
    return 0


def _cmd_resume(args) -> int:
    from orchestrator.session import SweepSession

    session = SweepSession.resuming(args.sweep, address=args.address, storage=args.storage)
    return _exit_status(session.run())


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
        uri = _uri(args.tracking_uri, spec.tracking.uri)
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

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: expected a positive number of processes, got {args.workers}")
    from tracking import with_sql_driver

    cmd = server_command(
        with_sql_driver(args.backend_store_uri),
        args.artifacts_destination,
        args.host,
        args.port,
        args.allowed_hosts,
        args.workers,
    )
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
    args = parser().parse_args(argv)
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
