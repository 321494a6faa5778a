"""The analysis step contract: parameters in ``__init__``, ``fit(series) -> StepResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    """What a step found: scalar ``metrics`` (logged as ``analysis/<step>/<name>``) and tables.

    ``tables`` maps a name to column-oriented data (``{"E": [...], "rho": [...]}``), saved as
    JSON artifacts beside the run; ``figures`` maps a file name to PNG bytes.
    """

    metrics: dict[str, float]
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (and closed)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
