"""P11: metric ingestion at cluster scale: N trial processes logging at once into one PostgreSQL.

    python -m benchmarks.ingest [--processes 16] [--direct-steps 1000] [--steps 100]
                                [--workers 1 2 4]

Each of ``--processes`` processes opens a trial run with ``tracking.TrialRun`` (the path trials
use: its background sender, the bulk SQL path on a database, ``log_batch`` through a server)
and logs 20 metrics a step (``--direct-steps`` straight, ``--steps`` through a server), all
processes released at once; the rate is the points stored / the time from the release until the
last process has flushed. Variants, on one real PostgreSQL server on 127.0.0.1 (as
``tests/services.py`` starts it): straight into the database, and through ``dynsweep server
--workers W`` for each W. After each variant every point is checked in the database (each run:
``steps × 20`` rows, every (key, step) once).

The limit, measured in the same run: PostgreSQL's own ``COPY`` of the same number of rows into
MLflow's ``metrics`` table from one process (its text built beforehand, timed until committed).
Needs Debian's ``postgresql`` and ``psycopg`` (``pip install -e '.[postgres]'``). Goal: direct
≥ 0.5 × limit; through the server the rate rises with the workers. Ratios are printed last.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

from benchmarks.common import machine

KEYS = [f"train/m{k}" for k in range(20)]


def _child(index: int, phases, start, done) -> None:
    """One trial process: for each (uri, experiment, parent) taken from the ``phases`` queue,
    wait for the release, log ``steps`` steps of 20 metrics into its own run and flush."""
    import tracking

    for uri, exp, parent, steps in iter(phases.get, None):
        run = tracking.TrialRun.open(uri, exp, parent, f"p{index}", f"p{index}", {}, {})
        start.wait()
        for step in range(steps):
            loss = 1.0 / (step + 1)
            run.log_metrics(step, dict(zip(KEYS, [loss + k for k in range(20)])))
        run.close()
        done.wait()


def _server(backend: str, folder: str, workers: int) -> tuple[subprocess.Popen, str]:
    from tests.helpers import free_port, wait_for_url

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", folder,
         "--workers", str(workers)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_url(f"http://127.0.0.1:{port}/health", 120)
    return proc, f"http://127.0.0.1:{port}"


def _connect(uri: str):
    import psycopg

    u = urlparse(uri)
    return psycopg.connect(host=u.hostname, port=u.port, user=u.username, dbname=u.path.lstrip("/"))


def check_stored(db: str, experiment_id: str, runs: int, steps: int) -> int:
    """Every run of the experiment holds ``steps × 20`` points, each (key, step) once."""
    with _connect(db) as conn:
        rows = conn.execute(
            "SELECT m.run_uuid, count(*), count(DISTINCT (m.key, m.step)) FROM metrics m "
            "JOIN runs r ON r.run_uuid = m.run_uuid WHERE r.experiment_id = %s "
            "GROUP BY m.run_uuid",
            (int(experiment_id),),
        ).fetchall()
    expected = steps * len(KEYS)
    bad = [r for r in rows if r[1] != expected or r[2] != expected]
    assert len(rows) == runs and not bad, f"{len(rows)} runs of {runs}; wrong: {bad[:3]}"
    return sum(r[1] for r in rows)


def copy_limit(db: str, experiment_id: str, runs: int, steps: int) -> float:
    """Points/s of one ``COPY … FROM STDIN`` of ``runs × steps × 20`` rows into ``metrics``."""
    import tracking
    from tracking.mlflow_sql import NewRun, sql_store

    store = sql_store(db)
    new = [NewRun(f"c{i}", f"c{i}", {tracking.tags.TRIAL: f"c{i}"}, {}) for i in range(runs)]
    ids = [run_id for run_id, _ in store.create_runs(experiment_id, new).values()]
    now = int(time.time() * 1000)
    rows = [
        (key, 1.0 / (step + 1) + k, now, step, False, run_id)
        for run_id in ids
        for step in range(steps)
        for k, key in enumerate(KEYS)
    ]
    with _connect(db) as conn:
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY metrics (key, value, timestamp, step, is_nan, run_uuid) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - start
    check_stored(db, experiment_id, runs, steps)
    return len(rows) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=16, help="trial processes at once")
    parser.add_argument("--steps", type=int, default=100, help="steps a process logs (server)")
    parser.add_argument(
        "--direct-steps", type=int, default=1000, help="steps a process logs straight (and COPY)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    for name in ("processes", "steps", "direct_steps"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag}: expected a positive number, got {getattr(args, name)}")
    if any(w < 1 for w in args.workers):
        parser.error(f"--workers: expected positive numbers, got {args.workers}")
    print(machine(), f"{os.cpu_count()} CPUs", flush=True)
    import tracking
    from tests.services import postgres
    from tracking.mlflow_sql import sql_store

    n = args.processes
    rates: dict[str, float] = {}
    variants = ["direct"] + [f"server --workers {w}" for w in args.workers]
    with postgres() as db, tempfile.TemporaryDirectory() as tmp:
        assert sql_store(db) is not None, "the bulk path is not available on this server"
        ctx = mp.get_context("spawn")
        phases, start, done = ctx.Queue(), ctx.Barrier(n + 1), ctx.Barrier(n + 1)
        procs = [
            ctx.Process(target=_child, args=(i, phases, start, done), daemon=True) for i in range(n)
        ]
        for p in procs:
            p.start()
        for label, workers in zip(variants, [None, *args.workers]):
            server = None if workers is None else _server(db, tmp, workers)  # one at a time
            try:
                uri = db if server is None else server[1]
                exp = tracking.ensure_experiment(uri, f"ingest-{time.time_ns()}")
                parent = tracking.start_sweep_run(uri, exp, label, {}, {})
                steps = args.direct_steps if server is None else args.steps
                for _ in procs:
                    phases.put((uri, exp, parent, steps))
                start.wait(timeout=900)  # every process has opened its run
                t0 = time.perf_counter()
                done.wait(timeout=3600)  # every process has flushed
                seconds = time.perf_counter() - t0
            finally:
                if server is not None:
                    from tests.services import _stop

                    _stop(server[0])
            stored = check_stored(db, exp, n, steps)
            rates[label] = stored / seconds
            print(f"{label:>22}: {rates[label]:9.0f} points/s stored ({stored} points, "
                  f"{n} processes, {seconds:.1f} s; every point checked)", flush=True)  # fmt: skip
        for _ in procs:
            phases.put(None)
        for p in procs:
            p.join(timeout=60)
        exp = tracking.ensure_experiment(db, f"ingest-copy-{time.time_ns()}")
        limit = copy_limit(db, exp, n, args.direct_steps)
    rows = n * args.direct_steps * len(KEYS)
    print(f"{'COPY, one process':>22}: {limit:9.0f} points/s ({rows} rows; the limit)")
    direct = rates["direct"]
    by_workers = ", ".join(
        f"{w} workers {rates[f'server --workers {w}']:.0f}" for w in args.workers
    )
    first = rates[f"server --workers {args.workers[0]}"]
    gains = ", ".join(
        f"{w}/{args.workers[0]} = {rates[f'server --workers {w}'] / first:.2f}"
        for w in args.workers[1:]
    )
    print(f"server points/s by workers: {by_workers} (rise {gains or '-'})")
    best = max(rates[k] for k in rates if k != "direct")
    print(f"ratios: direct/limit = {direct / limit:.2f} (goal >= 0.5); best server/direct = "
          f"{best / direct:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
