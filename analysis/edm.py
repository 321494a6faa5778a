"""Empirical dynamic modelling steps (pyEDM)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyEDM
from pyEDM.AuxFunc import ComputeError

from analysis.base import StepResult
from dynsweep.errors import DataError


class EmbedDimension:
    """Best embedding dimension of a scalar series by simplex forecast skill (pyEDM).

    Runs ``pyEDM.Simplex`` for E = 1..``max_E`` (in this process, without pyEDM's own process
    pool, which costs more than the forecasts on series of a few thousand points) on the first
    ``lib_fraction`` of the series as library and the rest as prediction set.

    Parameters
    ----------
    max_E : int
        Largest embedding dimension tried.
    tau : int
        Embedding delay (negative: past values, pyEDM's convention).
    Tp : int
        Forecast horizon in samples.
    lib_fraction : float
        Fraction of the series used as library.

    Result metrics: ``best_E`` (the E of highest rho) and ``rho`` (that correlation).
    Table ``rho_by_E``: rho for every E.
    """

    def __init__(self, max_E: int = 10, tau: int = -1, Tp: int = 1, lib_fraction: float = 0.5):
        if max_E < 1:
            raise ValueError("max_E must be at least 1")
        if not 0 < lib_fraction < 1:
            raise ValueError("lib_fraction must lie in (0, 1)")
        self.max_E, self.tau, self.Tp, self.lib_fraction = max_E, tau, Tp, lib_fraction

    def fit(self, series: np.ndarray) -> StepResult:
        x = np.asarray(series, dtype=float).reshape(-1)
        x = x[np.isfinite(x)]
        n = len(x)
        need = 2 * (self.max_E * abs(self.tau) + self.Tp) + 4
        if n < need:
            raise DataError(
                f"EmbedDimension: series of {n} points is too short for max_E="
                f"{self.max_E} (need at least {need})"
            )
        split = int(n * self.lib_fraction)
        frame = pd.DataFrame({"Time": np.arange(1, n + 1), "x": x})
        rhos = []
        for E in range(1, self.max_E + 1):
            out = pyEDM.Simplex(
                dataFrame=frame,
                columns="x",
                target="x",
                lib=[1, split],
                pred=[split + 1, n],
                E=E,
                Tp=self.Tp,
                tau=self.tau,
            )
            rho = ComputeError(out["Observations"], out["Predictions"])["rho"]
            rhos.append(float(rho) if np.isfinite(rho) else -1.0)
        best = int(np.argmax(rhos))
        return StepResult(
            metrics={"best_E": best + 1, "rho": rhos[best]},
            tables={"rho_by_E": {"E": list(range(1, self.max_E + 1)), "rho": rhos}},
        )
