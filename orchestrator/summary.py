"""Tables of a sweep's trials (for the end of a sweep and ``dynsweep runs``), the end-of-sweep
report (:func:`summarize_sweep` reads it, :func:`record_summary` logs it on the parent run) and
the analysis's lines."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run

import tracking
from analysis.io import find_runs
from orchestrator import space
from orchestrator.storage import describe
from orchestrator.sweep import SweepOutcome

SHOWN_METRICS = ("train/loss", "val/loss", "val/acc")


def rows(runs: list[Run], param_keys: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """Columns and one row per run: name, status, searched params, final metrics."""
    if param_keys is None:  # params that differ between runs
        keys = sorted({k for r in runs for k in r.data.params})
        param_keys = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    columns = ["trial", "status", *param_keys, *metric_keys]
    table = []
    for r in runs:
        row = {"trial": r.info.run_name, "status": r.info.status, "run_id": r.info.run_id}
        row.update({k: r.data.params.get(k, "") for k in param_keys})
        row.update({k: r.data.metrics.get(k, math.nan) for k in metric_keys})
        table.append(row)
    return columns, table


def format_table(columns: list[str], table: list[dict], max_width: int = 28) -> str:
    """A plain-text table; a dotted column is headed by its last part (``config.optimizer.lr``
    → ``lr``) unless that would be ambiguous."""
    lasts = [c.rsplit(".", 1)[-1] for c in columns]
    heads = [last if lasts.count(last) == 1 else c for c, last in zip(columns, lasts)]

    def cell(v) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(r.get(c, "")) for c in columns] for r in table]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def sort_rows(table: list[dict], metric: str, mode: str) -> list[dict]:
    def key(r: dict) -> float:
        v = r.get(metric, math.nan)
        if not isinstance(v, float) or math.isnan(v):
            return math.inf
        return -v if mode == "max" else v

    return sorted(table, key=key)


def write_csv(path: Path, columns: list[str], table: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run_id", *columns], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)


@dataclass
class SweepSummary:
    """The end of a sweep, read from MLflow: the report's text, and what
    :func:`record_summary` writes on the parent run."""

    text: str
    best: dict[str, float]  # {"best/METRIC": value}; empty when no finished trial has METRIC
    table: dict[str, list]  # the trials' table, column by column (best first)


def summarize_sweep(outcome: SweepOutcome) -> SweepSummary:
    """The end-of-sweep report of ``outcome`` (it reads the trials' runs; writes nothing)."""
    setup = outcome.setup
    spec = setup.spec
    runs = find_runs(spec.experiment_name(), sweep=setup.parent_run_id, uri=setup.uri)
    searched = [
        f"config.{space.dotted(p[1:])}" if p[0] == "config" else "seed"
        for p, _ in space.domains(spec.parsed_space())
    ]
    metrics = [k for k in (*SHOWN_METRICS, spec.metric) if any(k in r.data.metrics for r in runs)]
    columns, table = rows(runs, searched)
    columns = ["trial", "status", *searched, *dict.fromkeys(metrics)]
    table = sort_rows(table, spec.metric, spec.mode)
    counts = {s: sum(r.info.status == s for r in runs) for s in ("FINISHED", "FAILED", "KILLED")}
    lines = [
        "",
        f"Sweep {outcome.folder.name}: {len(runs)} trials — {counts['FINISHED']} finished, "
        f"{counts['FAILED']} failed, {counts['KILLED']} killed ({outcome.seconds:.0f} s)",
        format_table(columns, table),
    ]
    best = next(
        (
            r
            for r in table
            if r["status"] == "FINISHED" and spec.metric in r and not math.isnan(r[spec.metric])
        ),
        None,
    )
    if best is not None:
        lines.append(
            f"Best trial: {best['trial']}  {spec.metric} = {best[spec.metric]:.4g}  "
            f"(run {best['run_id']})"
        )
    for r in table:
        if r["status"] == "FAILED":
            error = next(x for x in runs if x.info.run_id == r["run_id"]).data.tags.get(
                tracking.tags.ERROR, "unknown reason"
            )
            lines.append(f"Failed trial {r['trial']}: {error}")
    lines += [
        f"MLflow: {setup.uri}  experiment {spec.experiment_name()!r}, sweep run "
        f"{setup.parent_run_id}",
        f"Tune:   {describe(outcome.folder.location)}",
        f"Open the MLflow UI:  dynsweep ui --tracking-uri {setup.uri}",
        f"  the sweep's runs:  http://127.0.0.1:5000/#/experiments/{setup.experiment_id}/runs",
    ]
    if outcome.status == "KILLED":
        lines.append(
            f"Interrupted. Continue with:  dynsweep resume {describe(outcome.folder.location)}"
        )
    return SweepSummary(
        "\n".join(lines),
        {} if best is None else {f"best/{spec.metric}": best[spec.metric]},
        {c: [r.get(c) for r in table] for c in ["run_id", *columns]},
    )


def record_summary(uri: str, parent_run_id: str, summary: SweepSummary) -> None:
    """Log the best metric and the trials' table on the sweep's parent run (nothing when no
    trial finished with the sweep's metric)."""
    if summary.best:
        tracking.log_summary(uri, parent_run_id, summary.best, summary.table)


def analysis_text(outcomes, shown_metrics: int = 6) -> str:
    """The analysis steps' results, one line a run and step (``dynsweep analyze`` and the end
    of a sweep)."""
    lines = [
        "\nAnalysis (written to each run as analysis/<step>/<metric>; the sweep's table and",
        "plots against each hyperparameter on its parent run, under analysis/):",
    ]
    for o in outcomes:
        items = list(o.metrics.items())
        shown = "  ".join(f"{k} = {v:.4g}" for k, v in items[:shown_metrics])
        if o.error:
            shown = f"{o.error}  (traceback: the run's analysis/{o.step}/traceback.txt)"
        more = f"  (+{len(items) - shown_metrics} more)" if len(items) > shown_metrics else ""
        kept = " (kept: same step config)" if o.skipped else ""
        lines.append(f"  {o.run_name:<40} {o.step:<8} {shown}{more}{kept}")
    return "\n".join(lines)
