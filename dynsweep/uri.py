"""Which MLflow tracking store a command uses: one order, everywhere.

1. the command line's ``--tracking-uri``;
2. the environment's ``MLFLOW_TRACKING_URI``;
3. the experiment file's ``tracking.uri`` (where the command reads one);
4. ``sqlite:///mlflow.db`` in the current folder (the embedded default).

``sweep``, ``resume``'s manifest, ``train`` under MPI, ``analyze``, ``runs``, ``ui``,
``--dry-run`` and the analysis readers all choose through :func:`choose_uri`
(``tracking.tracking_uri`` makes the result absolute).
"""

from __future__ import annotations

import os

DEFAULT_URI = "sqlite:///mlflow.db"
ENV = "MLFLOW_TRACKING_URI"


def choose_uri(flag: str | None = None, config: str | None = None) -> str:
    """The tracking URI by the order above (not yet made absolute)."""
    return flag or os.environ.get(ENV) or config or DEFAULT_URI
