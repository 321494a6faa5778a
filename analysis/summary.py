"""A sweep's analysis results joined with its hyperparameters: one row per trial, and a plot
of each analysis metric against each swept hyperparameter."""

from __future__ import annotations

import csv
import io
import math

from analysis.base import png

MAX_PANELS = 16  # analysis metrics plotted per hyperparameter figure


def sweep_table(runs) -> tuple[str, dict[str, bytes]]:
    """(CSV text, {file name: PNG}) for ``runs``: the params that differ between runs, and
    every ``analysis/...`` metric. Empty when no run has an analysis result."""
    keys = sorted({k for r in runs for k in r.data.params})
    swept = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    metrics = sorted({k for r in runs for k in r.data.metrics if k.startswith("analysis/")})
    if not metrics:
        return "", {}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run_id", "run_name", *swept, *metrics])
    for r in runs:
        writer.writerow(
            [
                r.info.run_id,
                r.info.run_name,
                *(r.data.params.get(k, "") for k in swept),
                *(r.data.metrics.get(k, math.nan) for k in metrics),
            ]
        )
    figures = {f"by_{_file(p)}.png": _plot(runs, p, metrics[:MAX_PANELS]) for p in swept}
    return buffer.getvalue(), figures


def _file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _plot(runs, param: str, metrics: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [r.data.params.get(param, "") for r in runs]
    numeric = all(_number(v) is not None for v in values)
    labels = sorted(set(values), key=lambda v: (_number(v) is None, _number(v) or 0, v))
    xs = [_number(v) if numeric else labels.index(v) for v in values]
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, metrics):
        ys = [r.data.metrics.get(key, math.nan) for r in runs]
        ax.scatter(xs, ys, s=14)
        ax.set_title(key.removeprefix("analysis/"), fontsize=8)
        ax.set_xlabel(param, fontsize=8)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    return png(fig)
