"""Empirical dynamic modelling steps (pyEDM)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyEDM
from pyEDM.AuxFunc import ComputeError

from analysis.base import StepResult
from analysis.figures import ccm_convergence, skill_curve
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
        # the library (first lib_fraction) must hold max_E + 2 embedded points with a target
        need = (
            int(
                np.ceil(
                    ((self.max_E - 1) * abs(self.tau) + self.Tp + self.max_E + 2)
                    / self.lib_fraction
                )
            )
            + 1
        )
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
        dims = list(range(1, self.max_E + 1))
        figure = skill_curve(
            dims, rhos, best + 1, "embedding dimension E",
            "Embedding dimension: simplex forecast skill by E",
        )  # fmt: skip
        return StepResult(
            metrics={"best_E": best + 1, "rho": rhos[best]},
            tables={"rho_by_E": {"E": dims, "rho": rhos}},
            figures={"rho_by_E.png": figure},
        )


def _series(series) -> np.ndarray:
    x = np.asarray(series, dtype=float).reshape(-1)
    return x[np.isfinite(x)]


def _prepared(series, step) -> dict:
    """pyEDM's arguments for forecasting a series from its first ``step.lib_fraction``."""
    x = _series(series)
    n, split = len(x), int(len(x) * step.lib_fraction)
    if split < step.min_lib or n - split < 3:
        name = type(step).__name__
        raise DataError(f"{name}: series of {n} points is too short for E={step.E}")
    frame = pd.DataFrame({"Time": np.arange(1, n + 1), "x": x})
    return {
        "dataFrame": frame,
        "columns": "x",
        "target": "x",
        "lib": [1, split],
        "pred": [split + 1, n],
        "E": step.E,
        "Tp": step.Tp,
        "tau": step.tau,
    }


def _rho(out) -> float:
    rho = ComputeError(out["Observations"], out["Predictions"])["rho"]
    return float(rho) if np.isfinite(rho) else -1.0


class SMapNonlinearity:
    """How nonlinear a series' dynamics are: S-map forecast skill over the localisation θ.

    ``pyEDM.SMap`` at each θ of ``thetas`` (in this process: ``PredictNonlinear`` would start a
    process pool), embedding ``E``, library the first ``lib_fraction`` of the series. θ = 0 is a
    global linear map; skill rising with θ means state-dependent (nonlinear) dynamics.
    Metrics: ``rho_linear`` (θ = 0), ``rho_best``, ``best_theta``, ``nonlinearity`` (the gain
    rho_best − rho_linear). Table ``rho_by_theta``.
    """

    def __init__(
        self,
        E: int = 3,
        thetas: tuple[float, ...] = (0, 0.1, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8),
        Tp: int = 1,
        tau: int = -1,
        lib_fraction: float = 0.5,
    ):
        if 0 not in thetas:
            raise ValueError("thetas must include 0 (the linear baseline)")
        self.E, self.thetas, self.Tp, self.tau = E, list(thetas), Tp, tau
        self.lib_fraction = lib_fraction
        self.min_lib = 3 * (E + 1)  # library rows an S-map fit needs

    def fit(self, series: np.ndarray) -> StepResult:
        args = _prepared(series, self)
        rhos = [_rho(pyEDM.SMap(**args, theta=theta)["predictions"]) for theta in self.thetas]
        best = int(np.argmax(rhos))
        linear = rhos[self.thetas.index(0)]
        return StepResult(
            metrics={
                "rho_linear": linear,
                "rho_best": rhos[best],
                "best_theta": float(self.thetas[best]),
                "nonlinearity": rhos[best] - linear,
            },
            tables={"rho_by_theta": {"theta": self.thetas, "rho": rhos}},
            figures={
                "rho_by_theta.png": skill_curve(
                    self.thetas,
                    rhos,
                    self.thetas[best],
                    "S-map localisation θ (0 = linear)",
                    "S-map: forecast skill by θ (a rise above θ = 0 means nonlinear dynamics)",
                )  # fmt: skip
            },
        )


class SimplexSkill:
    """Simplex forecast skill of a series at a given embedding (pyEDM): ``rho``, ``mae``,
    ``rmse`` of the ``Tp``-step forecasts on the last 1 − ``lib_fraction`` of the series."""

    def __init__(self, E: int = 3, Tp: int = 1, tau: int = -1, lib_fraction: float = 0.5):
        self.E, self.Tp, self.tau, self.lib_fraction = E, Tp, tau, lib_fraction
        self.min_lib = E + 2

    def fit(self, series: np.ndarray) -> StepResult:
        out = pyEDM.Simplex(**_prepared(series, self))
        err = ComputeError(out["Observations"], out["Predictions"])
        return StepResult(metrics={k: float(err[k]) for k in ("rho", "MAE", "RMSE")})


class CrossMapping:
    """Convergent cross mapping between every ordered pair of the given series.

    Input: two or more named series (metric keys; e.g. a learning-rate schedule and the loss,
    or weight principal components and the loss), aligned on their common steps. Computed by
    :func:`analysis.ccm.cross_map` — all pairs at once, equal to ``pyEDM.CCM`` pair by pair.
    ``<a>:<b>`` is the skill of estimating b from a's shadow manifold: if it is high and grows
    with the library size (convergence), b drives a. Metrics: ``rho/<a>:<b>`` (at the largest
    library), ``gain/<a>:<b>`` (rho at the largest minus the smallest library), and
    ``converges/<a>:<b>`` (1 when the gain exceeds ``min_gain`` and rho exceeds ``min_rho``).
    Table ``rho_by_library``.
    """

    min_inputs = 2

    def __init__(
        self,
        E: int = 3,
        lib_sizes: tuple[int, ...] | None = None,
        sample: int = 30,
        seed: int = 0,
        tau: int = -1,
        Tp: int = 0,
        min_gain: float = 0.05,
        min_rho: float = 0.2,
    ):
        self.E, self.lib_sizes, self.sample, self.seed = E, lib_sizes, sample, seed
        self.tau, self.Tp, self.min_gain, self.min_rho = tau, Tp, min_gain, min_rho

    def fit(self, series: dict[str, np.ndarray]) -> StepResult:
        from analysis.ccm import cross_map

        if not isinstance(series, dict) or len(series) < 2:
            raise DataError("CrossMapping: expected two or more named series (input: [a, b])")
        names = [k.replace("/", "_") for k in series]
        x = np.stack([np.asarray(v, dtype=float) for v in series.values()])
        n = x.shape[1]
        sizes = list(self.lib_sizes or np.linspace(self.E + 2, n - self.E, 5).astype(int))
        skill = cross_map(x, self.E, sizes, self.sample, self.seed, self.tau, self.Tp)
        metrics: dict[str, float] = {}
        table: dict[str, list] = {"pair": [], "lib_size": [], "rho": []}
        for a, na in enumerate(names):
            for b, nb in enumerate(names):
                if a == b:
                    continue
                pair = f"{na}:{nb}"
                rho, gain = skill[a, b, -1], skill[a, b, -1] - skill[a, b, 0]
                metrics[f"rho/{pair}"] = float(rho)
                metrics[f"gain/{pair}"] = float(gain)
                metrics[f"converges/{pair}"] = float(gain > self.min_gain and rho > self.min_rho)
                table["pair"] += [pair] * len(sizes)
                table["lib_size"] += [int(s) for s in sizes]
                table["rho"] += skill[a, b].tolist()
        figure = ccm_convergence(table, self.E)
        return StepResult(metrics, {"rho_by_library": table}, {"convergence.png": figure})
