"""The learning-curve figure every trial keeps as ``figures/learning_curves.png``.

Drawn from the run's stored metric histories when the trial finishes (so a retried or resumed
trial shows its whole history, not only its last attempt). Metrics that share a name after the
split (``train/loss`` and ``val/loss``) share a panel; losses get a log axis when positive.
"""

from __future__ import annotations

import io
import math

import numpy as np

MAX_PANELS, MAX_POINTS = 8, 4000
NAMES = {"acc": "accuracy", "loss": "loss"}


def panels(keys: list[str]) -> dict[str, list[str]]:
    """Metric keys grouped by their last path part (``loss``: train/loss, val/loss)."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    return dict(list(groups.items())[:MAX_PANELS])


def learning_curves(histories: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """PNG bytes: one panel per metric name, each split (train, val, …) a line over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = panels([k for k, (s, _) in histories.items() if len(s)])
    cols = min(3, max(1, len(groups)))
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, groups.items()):
        for key in keys:
            steps, values = histories[key]
            stride = max(1, len(steps) // MAX_POINTS)
            marker = "o" if len(steps) <= 30 else None
            ax.plot(steps[::stride], values[::stride], marker=marker, ms=3, lw=1.2, label=key)
        finite = np.concatenate([histories[k][1] for k in keys])
        finite = finite[np.isfinite(finite)]
        if "loss" in name and finite.size and finite.min() > 0:
            ax.set_yscale("log")
        label = NAMES.get(name, name)
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.set_ylabel(label + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
