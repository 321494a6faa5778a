"""The dataset's own PDE (Zhu et al.'s PDE hierarchy): PDE-FIND on the field u(j, r) of a
dataset's eigenimage spectra, eigen-index j as time and ring radius r as space.

The field is the one the ``autoencoder`` trainer follows (``trainers.autoencoder.spectra``:
eigenimages of the training images → centred |FFT2| / H → mean over each p-norm ring), here of
the dataset itself, not of a reconstruction. The fit is the original's
(``notebooks/pysindy/PDE_heriarchy_*/pysindy_*_pde_og.ipynb`` with ``src/helpers.py``):

- rows ``start`` … ``stop`` − 1 of the field (optionally a moving average over ``smooth`` rows
  first, the notebooks' ``n_avg``); r, j and u each min–max scaled to [0, 1];
- pysindy's ``PDELibrary``: a polynomial of ``degree`` in u (no bias) times the spatial
  derivatives up to ``derivative_order``, plus a constant; STLSQ with ``alpha`` and
  normalised columns, fitted on the first ``train_split`` of the rows;
- the original's threshold search (``pysindy_grid_search``): fits at ``thresholds`` (low,
  high), then for every number of terms in between not yet found, three thresholds evenly
  inside the interval left between its neighbours, until each count is found, its interval
  closes (``tol``) or ``timeout`` fits in a row found nothing new; per number of terms the
  threshold kept is the one whose model scores highest with ``score`` = the RMSE of u_t on the
  held-out rows (pysindy's default time step 1 there, as the original's ``model.score``).
  ``pick: max_score`` is the original's choice (the largest RMSE, i.e. the worst of the
  thresholds that give that many terms); ``pick: min_rmse`` keeps the best instead.

Metrics ``coef/<n>_terms/<term>`` (``u^2u_x`` as ``u2u_x``: MLflow names take no ``^``) and
``terms_found``; table ``equations`` (one row per number of terms) and the field's leading 256
rows as table ``field`` (j, r, u) for figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from analysis.base import StepResult
from dynsweep.errors import DataError


def dataset_field(
    dataset: str,
    data_dir: str | Path,
    p: float,
    half_width: float,
    radius_mult: float = 1.0,
    images: int | None = None,
    eigenimages: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(u, radii): u(j, r) of the dataset's training images (all of them unless ``images``),
    every eigenimage unless ``eigenimages``; float64. The eigenimages' spectra are cached in
    ``data_dir/spectra`` (every trial of a sweep asks for the same)."""
    import torch

    from trainers.autoencoder import spectra

    ffts = _eigen_spectra(dataset, Path(data_dir), images)
    k = min(eigenimages or len(ffts), len(ffts))
    config = spectra.SpectraConfig(
        eigenimages=k, p=p, half_width=half_width, radius_mult=radius_mult
    )
    shape = tuple(ffts.shape[-2:])
    u = spectra.ring_integrals(torch.from_numpy(ffts[:k]), spectra.ring_masks(shape, config))
    return u.numpy(), spectra.ring_radii(shape, config).numpy()


def _eigen_spectra(dataset: str, data_dir: Path, images: int | None) -> np.ndarray:
    """Centred |FFT2| / H of every eigenimage of the dataset's training images (k×H×W)."""
    from trainers.autoencoder import spectra
    from trainers.data import load_dataset

    path = data_dir / "spectra" / f"{dataset}-eigen-spectra-{images or 'all'}.npy"
    if path.exists():
        return np.load(path)
    (x, _), _ = load_dataset(dataset, data_dir, 0.2, 0)
    x = x[:images] if images else x
    ffts = spectra.centred_fft(spectra.eigenimages(x.double(), x[0].numel())).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, ffts)
    tmp.replace(path)
    return ffts


def moving_average(u: np.ndarray, n: int) -> np.ndarray:
    """Mean of each ``n`` consecutive rows (the original's ``moving_average`` on axis 0)."""
    c = np.cumsum(u, axis=0, dtype=float)
    c[n:] = c[n:] - c[:-n]
    return c[n - 1 :] / n


def min_max(a: np.ndarray) -> np.ndarray:
    """``a`` scaled to [0, 1] over all its values."""
    span = a.max() - a.min()
    if abs(span) <= 1e-8:
        raise DataError("dataset_pde: a constant array cannot be min-max scaled")
    return (a - a.min()) / span


def term_name(feature: str) -> str:
    """pysindy's ``x0``, ``x0_11``, ``x0x0_1`` → ``u``, ``u_xx``, ``uu_x`` (``x0^2`` → ``u^2``)."""
    name = feature.replace("x0", "u")
    head, _, orders = name.partition("_")
    return f"{head}_{'x' * len(orders)}" if orders else head


class DatasetPDE:
    """PDE-FIND on a dataset's own spectral field (see the module's docstring).

    Input: none (``input_kind = "dataset"``: the step reads the dataset named by
    ``dataset`` from ``data_dir``; the trial's own recordings are not used, so every trial
    gets the same result)."""

    input_kind: ClassVar[str] = "dataset"
    FIELD_ROWS: ClassVar[int] = 256  # leading rows of u(j, r) kept in the ``field`` table

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        data_dir: str = "data",
        p: float | None = None,
        half_width: float | None = None,
        radius_mult: float | None = None,
        images: int | None = None,
        start: int = 15,
        stop: int = 150,
        smooth: int = 1,
        degree: int = 2,
        derivative_order: int = 3,
        alpha: float = 1e-5,
        thresholds: tuple[float, float] = (35.0, 206.0),
        train_split: float = 0.8,
        pick: Literal["max_score", "min_rmse"] = "max_score",
        tol: float = 1e-8,
        timeout: int = 100,
    ):
        if pick not in ("max_score", "min_rmse"):
            raise ValueError(f"pick: expected max_score or min_rmse, got {pick!r}")
        if not 0 <= start < stop or smooth < 1 or not 0 < train_split < 1:
            raise ValueError("start < stop, smooth ≥ 1 and 0 < train_split < 1 expected")
        if len(thresholds) != 2 or not 0 <= thresholds[0] < thresholds[1]:
            raise ValueError(f"thresholds: expected [low, high], got {thresholds!r}")
        self.dataset, self.data_dir, self.images = dataset, data_dir, images
        self.ring = {"p": p, "half_width": half_width, "radius_mult": radius_mult}
        self.start, self.stop, self.smooth = start, stop, smooth
        self.degree, self.derivative_order, self.alpha = degree, derivative_order, alpha
        self.thresholds, self.train_split, self.pick = tuple(thresholds), train_split, pick
        self.tol, self.timeout = tol, timeout

    def ring_settings(self) -> dict[str, float]:
        from trainers.autoencoder.trainer import SPECTRA_DEFAULTS

        defaults = SPECTRA_DEFAULTS.get(self.dataset, SPECTRA_DEFAULTS["digits"])
        return {k: (defaults[k] if v is None else v) for k, v in self.ring.items()}

    def fit(self, data: Any = None) -> StepResult:
        ring = self.ring_settings()
        u, radii = dataset_field(self.dataset, self.data_dir, images=self.images, **ring)
        equations = self.fit_field(u, radii)
        metrics: dict[str, float] = {"terms_found": float(len(equations))}
        table: dict[str, list] = {"terms": [], "threshold": [], "score": [], "equation": []}
        for n, (threshold, score, coefs) in sorted(equations.items()):
            for term, value in coefs.items():
                metrics[f"coef/{n}_terms/{term.replace('^', '')}"] = value
            table["terms"].append(n)
            table["threshold"].append(threshold)
            table["score"].append(score)
            table["equation"].append(" + ".join(f"{v:.5f} {t}" for t, v in coefs.items()) or "0")
        shown = u[: self.FIELD_ROWS]
        j, r = np.meshgrid(np.arange(len(shown)), radii, indexing="ij")
        field = {"j": j.ravel().tolist(), "r": r.ravel().tolist(), "u": shown.ravel().tolist()}
        return StepResult(metrics, {"equations": table, "field": field}, {})

    def prepare(self, u: np.ndarray, radii: np.ndarray):
        """(u, x, t) scaled to [0, 1] as the original's notebook: rows start … stop − 1 of the
        moving average."""
        field = moving_average(np.asarray(u, dtype=float), self.smooth)[self.start : self.stop]
        if len(field) < 10:
            raise DataError(f"dataset_pde: only {len(field)} rows between start and stop")
        x = min_max(np.asarray(radii, dtype=float))
        t = min_max(np.arange(len(field), dtype=float))
        return min_max(field), x, t

    def _model(self, library, threshold: float):
        import pysindy as ps

        optimizer = ps.STLSQ(threshold=threshold, alpha=self.alpha, normalize_columns=True)
        return ps.SINDy(feature_library=library, optimizer=optimizer)

    def fit_field(self, u: np.ndarray, radii: np.ndarray) -> dict[int, tuple]:
        """{number of terms: (threshold, score, {term: coefficient})} by the original's search."""
        import pysindy as ps
        from sklearn.metrics import root_mean_squared_error

        u, x, t = self.prepare(u, radii)
        data = u.T[:, :, None]  # r × j × 1, pysindy's layout
        split = int(self.train_split * data.shape[1])
        train, test = data[:, :split], data[:, split:]
        dt = t[1] - t[0]
        library = ps.PDELibrary(
            function_library=ps.PolynomialLibrary(degree=self.degree, include_bias=False),
            derivative_order=self.derivative_order,
            spatial_grid=x,
            include_bias=True,
        )

        def run(threshold: float) -> tuple[int, float]:
            model = self._model(library, threshold)
            model.fit(train, t=dt)
            score = model.score(test, t=1.0, metric=root_mean_squared_error)
            return int(np.count_nonzero(model.optimizer.coef_)), float(score)

        found: dict[int, list[tuple[float, float]]] = {}
        for threshold in self.thresholds:
            n, score = run(threshold)
            found.setdefault(n, []).append((threshold, score))
        wanted = list(range(min(found), max(found) + 1))
        current, probes = self._next(found, wanted)
        repeats = 0
        while probes:
            for threshold in probes:
                n, score = run(threshold)
                repeats += n in found
                found.setdefault(n, []).append((threshold, score))
            target, probes = self._next(found, wanted)
            if target != current:
                current, repeats = target, 0
            elif repeats >= self.timeout:  # the original then stops searching altogether
                break
        out = {}
        for n, entries in found.items():
            best = max if self.pick == "max_score" else min
            threshold, score = best(entries, key=lambda e: e[1])
            model = self._model(library, threshold)
            model.fit(train, t=dt)
            names = [term_name(f) for f in model.get_feature_names()]
            coefs = {name: float(c) for name, c in zip(names, model.optimizer.coef_[0]) if c != 0}
            out[n] = (threshold, score, coefs)
        return out

    def _next(self, found: dict, wanted: list[int]) -> tuple[int | None, list[float]]:
        """The next number of terms to look for and three thresholds to try (none: done)."""
        missing = sorted(set(wanted) - set(found))
        if not missing:
            return None, []
        n = missing[0]
        # thresholds fall as the number of terms grows: the interval lies between the
        # largest threshold of the nearest count above n and the smallest of the nearest below
        above = min(k for k in found if k >= n)
        below = [k for k in found if k < n]
        if not below:
            wanted.remove(n)
            return self._next(found, wanted)
        low = max(e[0] for e in found[above])
        high = min(e[0] for e in found[max(below)])
        if abs(high - low) <= self.tol:
            wanted.remove(n)
        return n, np.linspace(low, high, 5)[1:4].tolist()
