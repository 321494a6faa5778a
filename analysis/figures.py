"""Figures of the analysis steps, drawn from their own tables (PNG bytes for ``StepResult``).

Each has a title a reader understands without the code, labelled axes, and marks what the
step reports (the chosen E, the best θ, the library sizes, the kept terms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.base import png

MAX_PAIRS = 12  # CCM pairs drawn in one convergence figure


def _axes(width: float = 5.5, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def skill_curve(
    x: Sequence[float], rho: Sequence[float], best: float, xlabel: str, title: str
) -> bytes:
    """Forecast skill ρ against a parameter (E, θ), the chosen value marked."""
    fig, ax = _axes()
    ax.plot(x, rho, "o-", lw=1.5)
    ax.axvline(best, color="tab:red", ls="--", lw=1, label=f"chosen: {best:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("forecast skill ρ (observed vs predicted)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def ccm_convergence(table: dict[str, list], E: int) -> bytes:
    """Cross-map skill against library size, one line per ordered pair ("a:b": a xmap b)."""
    fig, ax = _axes(6.5, 4.0)
    pairs = list(dict.fromkeys(table["pair"]))[:MAX_PAIRS]
    lib, rho, pair = (np.asarray(table[k]) for k in ("lib_size", "rho", "pair"))
    for name in pairs:
        a, b = name.split(":", 1)
        mask = pair == name
        ax.plot(lib[mask], rho[mask], "o-", lw=1.2, ms=3, label=f"{a} cross-maps {b}")
    ax.set_xlabel("library size (points of the shadow manifold)")
    ax.set_ylabel("cross-map skill ρ")
    ax.set_title(
        f"Convergent cross mapping (E = {E}): skill by library size\n"
        "(rising skill when a cross-maps b: b drives a)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return png(fig)


def coefficient_bars(table: dict[str, list], equations: dict[str, list], title: str) -> bytes:
    """The kept terms' coefficients (bars; error bars: the ensemble's std) and the equations."""
    labels = [f"{e}: {t}" for e, t in zip(table["equation"], table["term"])]
    fig, ax = _axes(6.5, max(2.4, 0.35 * len(labels) + 1.6))
    y = np.arange(len(labels))
    ax.barh(y, table["mean"], xerr=table["std"], color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("coefficient (mean ± std over the ensemble)")
    text = "\n".join(f"{lhs} = {rhs}" for lhs, rhs in zip(equations["lhs"], equations["rhs"]))
    ax.set_title(f"{title}\n{text}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return png(fig)
