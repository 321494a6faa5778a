"""Sparse identification of dynamics (pysindy): SINDy on trajectories, PDE-FIND on fields.

``SINDy`` fits dx/dt = Θ(x) ξ to a multivariate series (recorded latents, several metrics);
``PDEFind`` fits u_t = Θ(u, u_x, u_xx, …) ξ to a field u(x, t) recorded one row per step (the
autoencoder's radial spectrum, a layer's weights), in the strong form (finite differences) or
the weak form (``WeakPDELibrary``: integrals against test functions, robust to noise). Both can
bag an ensemble of fits (pysindy's ``EnsembleOptimizer``) and then report every term's mean,
standard deviation and inclusion probability. The equations come back as text (a table) and as
metrics ``coef/<equation>/<term>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.base import StepResult
from analysis.figures import coefficient_bars
from dynsweep.errors import DataError


def _optimizer(threshold: float, alpha: float, ensemble: int, seed: int):
    import pysindy as ps

    opt = ps.STLSQ(threshold=threshold, alpha=alpha)
    if ensemble > 1:
        np.random.seed(seed)  # pysindy's bagging draws from numpy's global generator
        return ps.EnsembleOptimizer(opt, bagging=True, n_models=ensemble)
    return opt


def _terms(model, names: list[str], ensemble: int) -> tuple[dict[str, float], dict[str, list]]:
    """Metrics and the coefficient table (mean, std, inclusion probability per term)."""
    features = model.get_feature_names()
    opt = model.optimizer
    coefs = np.asarray(opt.coef_list) if ensemble > 1 else np.asarray(opt.coef_)[None]
    mean, std = coefs.mean(0), coefs.std(0)
    inclusion = (np.abs(coefs) > 0).mean(0)
    metrics: dict[str, float] = {}
    table: dict[str, list] = {"equation": [], "term": [], "mean": [], "std": [], "inclusion": []}
    for i, lhs in enumerate(names):
        for j, term in enumerate(features):
            if inclusion[i, j] == 0:
                continue
            metrics[f"coef/{lhs}/{term}"] = float(mean[i, j])
            for key, value in (
                ("equation", lhs),
                ("term", term),
                ("mean", float(mean[i, j])),
                ("std", float(std[i, j])),
                ("inclusion", float(inclusion[i, j])),
            ):
                table[key].append(value)
    metrics["terms"] = float((inclusion > 0.5).sum())
    return metrics, table


def _equations(model, names: list[str]) -> dict[str, list]:
    return {"lhs": list(names), "rhs": [str(e) for e in model.equations(precision=4)]}


class SINDy:
    """dx/dt = Θ(x) ξ with a polynomial library and STLSQ (pysindy).

    Parameters: ``degree`` of the polynomial library, ``threshold`` and ``alpha`` of STLSQ,
    ``ensemble`` bagged fits (1: one fit), ``dt`` between rows (default: from the steps).
    Input: an array T × d or a dict of named series (aligned). Metrics: ``r2`` (of the fitted
    derivative), ``terms`` (active terms), ``coef/<x>'/<term>``. Tables: ``equations``,
    ``coefficients``.
    """

    def __init__(
        self,
        degree: int = 2,
        threshold: float = 0.1,
        alpha: float = 0.05,
        ensemble: int = 1,
        dt: float | None = None,
        seed: int = 0,
    ):
        if degree < 1 or threshold < 0 or ensemble < 1:
            raise ValueError("degree ≥ 1, threshold ≥ 0 and ensemble ≥ 1 expected")
        self.degree, self.threshold, self.alpha = degree, threshold, alpha
        self.ensemble, self.dt, self.seed = ensemble, dt, seed

    def fit(self, data: Any, steps: np.ndarray | None = None) -> StepResult:
        import pysindy as ps

        names, x = _matrix(data)
        dt = self.dt or (float(np.median(np.diff(steps))) if steps is not None else 1.0)
        model = ps.SINDy(
            feature_library=ps.PolynomialLibrary(degree=self.degree),
            optimizer=_optimizer(self.threshold, self.alpha, self.ensemble, self.seed),
        )
        model.fit(x, t=dt, feature_names=names)
        metrics, table = _terms(model, [f"{n}'" for n in names], self.ensemble)
        metrics["r2"] = float(model.score(x, t=dt))
        equations = _equations(model, [f"{n}'" for n in names])
        title = "SINDy: sparse equations of the metrics' dynamics (d/dt per step)"
        return StepResult(
            metrics,
            {"equations": equations, "coefficients": table},
            {"coefficients.png": coefficient_bars(table, equations, title)},
        )


class PDEFind:
    """u_t = Θ(u, u_x, …) ξ for a field recorded one row per step (pysindy's PDE-FIND).

    Parameters: ``weak`` (the weak form, ``WeakPDELibrary``; else finite differences),
    ``derivative_order`` in x, ``degree`` of the polynomial in u, ``threshold``/``alpha`` of
    STLSQ, ``ensemble`` bagged fits, ``dx``/``dt`` (grid spacings; default 1 and the step
    spacing), ``K`` test functions (weak form). Input: an array steps × points (u[t, x]).
    Metrics: ``coef/u_t/<term>``, ``terms``. Tables: ``equations``, ``coefficients``.
    """

    def __init__(
        self,
        weak: bool = True,
        derivative_order: int = 2,
        degree: int = 2,
        threshold: float = 0.05,
        alpha: float = 1e-5,
        ensemble: int = 1,
        dx: float = 1.0,
        dt: float | None = None,
        K: int = 200,
        seed: int = 0,
    ):
        self.weak, self.derivative_order, self.degree = weak, derivative_order, degree
        self.threshold, self.alpha, self.ensemble = threshold, alpha, ensemble
        self.dx, self.dt, self.K, self.seed = dx, dt, K, seed

    def fit(self, field: np.ndarray, steps: np.ndarray | None = None) -> StepResult:
        import pysindy as ps

        u = np.asarray(field, dtype=float)
        if u.ndim != 2 or min(u.shape) < 5 or not np.isfinite(u).all():
            raise DataError(f"PDEFind: expected a finite field of steps × points, got {u.shape}")
        nt, nx = u.shape
        dt = self.dt or (float(np.median(np.diff(steps))) if steps is not None else 1.0)
        x = np.arange(nx) * self.dx
        t = np.arange(nt) * dt
        poly = ps.PolynomialLibrary(degree=self.degree, include_bias=False)
        data = u.T[:, :, None]  # x × t × 1, pysindy's layout
        if self.weak:
            grid = np.stack(np.meshgrid(x, t, indexing="ij"), axis=-1)
            library = ps.WeakPDELibrary(
                function_library=poly,
                derivative_order=self.derivative_order,
                spatiotemporal_grid=grid,
                K=self.K,
                include_bias=False,
            )
        else:
            library = ps.PDELibrary(
                function_library=poly,
                derivative_order=self.derivative_order,
                spatial_grid=x,
                include_bias=False,
            )
        model = ps.SINDy(
            feature_library=library,
            optimizer=_optimizer(self.threshold, self.alpha, self.ensemble, self.seed),
        )
        model.fit(data, t=t, feature_names=["u"])
        metrics, table = _terms(model, ["u_t"], self.ensemble)
        equations = _equations(model, ["u_t"])
        form = "weak" if self.weak else "strong"
        title = f"PDE-FIND ({form} form): the field's equation u_t = ..."
        return StepResult(
            metrics,
            {"equations": equations, "coefficients": table},
            {"coefficients.png": coefficient_bars(table, equations, title)},
        )


def _matrix(data: Any) -> tuple[list[str], np.ndarray]:
    if isinstance(data, dict):
        names = [_safe(k) for k in data]
        x = np.column_stack([np.asarray(v, dtype=float) for v in data.values()])
    else:
        x = np.asarray(data, dtype=float)
        x = x[:, None] if x.ndim == 1 else x.reshape(len(x), -1)
        names = [f"x{i}" for i in range(x.shape[1])]
    if len(x) < 10 or not np.isfinite(x).all():
        raise DataError(f"SINDy: expected at least 10 finite rows, got {x.shape}")
    return names, x


def _safe(name: str) -> str:
    return name.replace("/", "_")
