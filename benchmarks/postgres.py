"""The bulk metric path on PostgreSQL: points/s through dynsweep against one ``log_metric``
call per point, on a real PostgreSQL server started on 127.0.0.1 for the run.

    python -m benchmarks.postgres [--points 20000]

Needs Debian's ``postgresql`` package (``apt-get install postgresql``) and ``psycopg``
(``pip install -e '.[postgres]'``). Goal: ≥ 10× one call per point, every point stored once.
The ratio line is printed last.
"""

from __future__ import annotations

import argparse

from benchmarks.common import machine
from benchmarks.logging import one_call_per_point, through_dynsweep
from tests.services import postgres
from tracking.mlflow_sql import sql_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--per-point", type=int, default=1_000, help="log_metric calls timed")
    args = parser.parse_args()
    print(machine())
    with postgres() as uri:
        assert sql_store(uri) is not None, "the bulk path is not available on this server"
        bulk = through_dynsweep(uri, args.points)  # asserts every point was stored
        single = one_call_per_point(uri, args.per_point)
    print(f"{'dynsweep -> postgresql':>24}: {bulk:10.0f} points/s ({args.points} points)")
    print(f"{'log_metric -> postgresql':>24}: {single:10.0f} points/s ({args.per_point} calls)")
    print(f"ratio: dynsweep/log_metric postgresql = {bulk / single:.0f}x  (goal: >= 10x)")


if __name__ == "__main__":
    main()
