"""Dold et al.'s UCI table, reproduced: the table of docs/studies/paths-sampling.md.

Reads the finished runs of ``uci_sampling_repro`` (``dynsweep sweep
configs/uci_paths_repro.yaml configs/uci_sampling_repro.yaml``). For each path (a seed: its
data split, path and chains), the temperature with the best validation LPPD (``val/lppd_val``,
the original's ``elpd_valid``) is chosen, as the original chooses it; its test LPPD
(``val/lppd``, a per-point mean, the original's ``elpd_test``) and RMSE (``val/rmse``) are
then averaged over seeds (mean ± std) and printed as a markdown table beside the paper's, with
each seed's chosen temperature and the sampling's wall time.

    python -m reproductions.paths_uci [--tracking-uri URI] [--sweep NAME_OR_ID]...

A cell is (data set, space, K); a sweep run with ``--set dataset=…`` or ``--set order=…``
appears as its own row.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np

EXPERIMENT = "uci_sampling_repro"
PATHS = "uci_paths_repro"
# The paper's numbers (test LPPD mean ± std over 5 seeds, RMSE), by (data set, space, K);
# SOURCE says where each comes from.
ORIGINAL = {
    ("energy", "lambda", 2): (1.74, 0.14, 0.043),
    ("airfoil", "lambda", 20): (0.34, 0.04, None),
    ("airfoil", "line", 20): (0.39, 0.07, None),
}
SOURCE = "the paper's UCI table, as issue #26 quotes it"
RUN_ID = re.compile(r"[0-9a-f]{32}")


def collect(uri: str | None, sweeps: list[str] | None = None) -> tuple[dict, dict]:
    """({(data set, space, K): {seed: [(T, lppd_val, lppd, rmse, seconds), …]}}, {sweep name:
    wall time in s}) over ``sweeps`` (default: every finished sweep; a (cell, seed, T) run
    twice counts once, the newest; none finished: the newest sweep's finished runs)."""
    from mlflow.tracking import MlflowClient

    from analysis.io import find_runs, find_sweep, find_sweeps

    client = MlflowClient(uri) if uri else MlflowClient()
    if sweeps:
        parents = [find_sweep(EXPERIMENT, s, uri) for s in sweeps]
    else:
        every = find_sweeps(EXPERIMENT, uri)
        parents = [p for p in every if p.info.status == "FINISHED"] or every[:1]
    cells: dict = defaultdict(dict)
    seen, walls, paths = set(), {}, {}
    for parent in parents:  # newest first
        info = parent.info
        walls[info.run_name] = (info.end_time - info.start_time) / 1000 if info.end_time else None
        for run in find_runs(EXPERIMENT, info.run_id, status="FINISHED", uri=uri):
            params, m = run.data.params, run.data.metrics
            if "val/lppd_val" not in m:
                continue
            found = RUN_ID.findall(params.get("config.path_model", ""))
            path_id = found[-1] if found else None
            if path_id not in paths:
                paths[path_id] = client.get_run(path_id).data.params if path_id else {}
            path = paths[path_id]
            cell = (path.get("config.dataset"), params["config.space"], int(path["config.order"]))
            seed, temperature = (
                int(path.get("seed", params["seed"])),
                float(params["config.temperature"]),
            )
            if (cell, seed, temperature) in seen:
                continue
            seen.add((cell, seed, temperature))
            row = (temperature, m["val/lppd_val"], m["val/lppd"], m["val/rmse"])
            cells[cell].setdefault(seed, []).append((*row, m.get("val/sample_seconds")))
    return cells, walls


def chosen(rows: list[tuple]) -> tuple:
    """The row of the temperature with the best validation LPPD."""
    return max(rows, key=lambda r: r[1])


def table(cells: dict) -> str:
    lines = [
        "| cell | quantity | original | dynsweep (mean ± std over seeds) | difference |",
        "|---|---|---|---|---|",
    ]
    for cell, seeds in sorted(cells.items()):
        picks = {s: chosen(rows) for s, rows in sorted(seeds.items())}
        lppd = np.array([p[2] for p in picks.values()])
        rmse = np.array([p[3] for p in picks.values()])
        name = f"{cell[0]}, {cell[1]}, K = {cell[2]} ({len(picks)} seeds)"
        temps = ", ".join(f"{s}: {p[0]:g}" for s, p in picks.items())
        orig = ORIGINAL.get(cell)
        ours_lppd = f"{lppd.mean():.3f} ± {lppd.std(ddof=1) if len(lppd) > 1 else 0:.3f}"
        if orig:
            diff = lppd.mean() - orig[0]
            within = " (within the paper's std)" if abs(diff) <= orig[1] else ""
            lines.append(
                f"| {name} | test LPPD | {orig[0]:.2f} ± {orig[1]:.2f} ({SOURCE}) | {ours_lppd} "
                f"| {diff:+.3f}{within} |"
            )
        else:
            lines.append(f"| {name} | test LPPD | — | {ours_lppd} | — |")
        ours_rmse = f"{rmse.mean():.4f} ± {rmse.std(ddof=1) if len(rmse) > 1 else 0:.4f}"
        if orig and orig[2] is not None:
            rel = (rmse.mean() - orig[2]) / orig[2]
            lines.append(f"| ″ | test RMSE | {orig[2]:.3f} | {ours_rmse} | {rel:+.0%} |")
        else:
            lines.append(f"| ″ | test RMSE | — | {ours_rmse} | — |")
        lines.append(f"| ″ | chosen T by seed | — | {temps} | — |")
    return "\n".join(lines)


def per_temperature(cells: dict) -> str:
    """Every temperature's test and validation LPPD, mean over seeds (what the choice saw)."""
    lines = ["| cell | T | validation LPPD | test LPPD | test RMSE |", "|---|---|---|---|---|"]
    for cell, seeds in sorted(cells.items()):
        by_t: dict = defaultdict(list)
        for rows in seeds.values():
            for row in rows:
                by_t[row[0]].append(row)
        for t, rows in sorted(by_t.items()):
            a = np.array([r[1:4] for r in rows])
            lines.append(
                f"| {cell[0]} {cell[1]} K={cell[2]} | {t:g} | {a[:, 0].mean():.3f} | "
                f"{a[:, 1].mean():.3f} | {a[:, 2].mean():.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri")
    parser.add_argument("--sweep", action="append", help="a sweep's name or id (repeatable)")
    args = parser.parse_args(argv)
    from tracking import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    cells, walls = collect(uri, args.sweep)
    if not cells:
        raise SystemExit(f"no finished runs of {EXPERIMENT} in {uri}")
    print(table(cells))
    print()
    print(per_temperature(cells))
    print()
    for name, seconds in walls.items():
        print(f"sweep {name}: {seconds / 60:.1f} min" if seconds else f"sweep {name}: unfinished")


if __name__ == "__main__":
    main()
