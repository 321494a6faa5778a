"""Spectra of training trajectories: per-layer PCA of recorded weights with the Welch power
spectral density of the projections, and the eigenvalues of a fitted Koopman operator."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.base import StepResult
from dynsweep.errors import DataError


class WeightPCA:
    """Per-layer PCA of a recorded weight trajectory, fitted incrementally.

    scikit-learn's ``IncrementalPCA`` sees ``batch`` steps at a time (uncompressed trajectory
    chunks are memory-mapped, so a layer is never loaded whole); the projections on the leading
    ``components`` get a Welch PSD (scipy). ``layers``: labelled blocks of the trajectory
    (default: every one). Metrics per layer: ``<layer>/explained_<i>`` (variance ratios),
    ``<layer>/rank`` (components above ``rank_tol`` of the variance), ``<layer>/psd_peak`` (the
    frequency, in cycles per step, where PC1's power peaks) and ``<layer>/psd_slope`` (the
    log-log slope of PC1's PSD: −2 for a random walk). Tables: ``explained``, ``psd``.
    """

    input_kind = "trajectory"

    def __init__(
        self,
        components: int = 5,
        layers: list[str] | None = None,
        batch: int = 256,
        rank_tol: float = 0.01,
        nperseg: int = 256,
    ):
        if components < 1 or batch < components:
            raise ValueError("components ≥ 1 and batch ≥ components expected")
        self.components, self.layers, self.batch = components, layers, batch
        self.rank_tol, self.nperseg = rank_tol, nperseg

    def fit(self, trajectory: Any) -> StepResult:
        from scipy.signal import welch
        from sklearn.decomposition import IncrementalPCA

        labels = self.layers or list(trajectory.columns) or ["all"]
        steps = np.asarray(trajectory.steps)
        n_steps = len(steps)
        if n_steps < 2 * self.components:
            raise DataError(
                f"WeightPCA: {n_steps} recorded steps; need at least {2 * self.components}"
            )
        metrics: dict[str, float] = {}
        explained = {"layer": [], "component": [], "ratio": []}
        psd_table = {"layer": [], "frequency": [], "power": []}
        for label in labels:
            block = trajectory.values.reshape(n_steps, -1)
            if label in trajectory.columns:
                block = trajectory.column(label)
            elif label != "all":
                raise DataError(
                    f"WeightPCA: no layer {label!r}; recorded: {list(trajectory.columns)}"
                )
            k = min(self.components, block.shape[1], n_steps)
            pca = IncrementalPCA(n_components=k)
            for start in range(0, n_steps, self.batch):
                rows = block[start : start + self.batch]
                if len(rows) >= k:  # IncrementalPCA needs ≥ k rows a batch
                    pca.partial_fit(np.asarray(rows, dtype=np.float64))
            ratios = pca.explained_variance_ratio_
            proj = np.concatenate(
                [
                    pca.transform(np.asarray(block[s : s + self.batch], dtype=np.float64))
                    for s in range(0, n_steps, self.batch)
                ]
            )
            spacing = float(np.median(np.diff(steps))) if n_steps > 1 else 1.0
            freq, power = welch(proj[:, 0], fs=1.0 / spacing, nperseg=min(self.nperseg, n_steps))
            positive = (freq > 0) & (power > 0)
            slope = (
                float(np.polyfit(np.log(freq[positive]), np.log(power[positive]), 1)[0])
                if positive.sum() >= 2
                else float("nan")
            )
            for i, r in enumerate(ratios, 1):
                metrics[f"{label}/explained_{i}"] = float(r)
                explained["layer"].append(label)
                explained["component"].append(i)
                explained["ratio"].append(float(r))
            metrics[f"{label}/rank"] = float((ratios > self.rank_tol).sum())
            metrics[f"{label}/psd_peak"] = (
                float(freq[1:][np.argmax(power[1:])]) if len(freq) > 1 else 0.0
            )
            metrics[f"{label}/psd_slope"] = slope
            psd_table["layer"] += [label] * len(freq)
            psd_table["frequency"] += freq.tolist()
            psd_table["power"] += power.tolist()
        return StepResult(metrics, {"explained": explained, "psd": psd_table})


class KoopmanSpectrum:
    """Eigenvalues of a ``koopman`` run's fitted operator K (its exported ``model.pt``).

    Metrics: ``eig_abs_<i>`` (moduli, descending, the first ``top``), ``spectral_radius``,
    ``eig_angle_<i>`` (arguments, radians), ``unit_circle`` (eigenvalues within ``tol`` of
    modulus 1: conserved or oscillating modes). Table: ``eigenvalues`` (real, imag, abs)."""

    input_kind = "model"

    def __init__(self, top: int = 5, tol: float = 0.05):
        self.top, self.tol = top, tol

    def fit(self, model: dict[str, Any]) -> StepResult:
        state = model.get("state", {}) if isinstance(model, dict) else {}
        if model.get("trainer") != "koopman" or "K" not in state:
            raise DataError("KoopmanSpectrum: expected the model.pt of a 'koopman' run")
        eig = np.linalg.eigvals(np.asarray(state["K"], dtype=np.float64))
        order = np.argsort(-np.abs(eig))
        eig = eig[order]
        metrics = {"spectral_radius": float(np.abs(eig[0]))}
        for i, value in enumerate(eig[: self.top], 1):
            metrics[f"eig_abs_{i}"] = float(abs(value))
            metrics[f"eig_angle_{i}"] = float(np.angle(value))
        metrics["unit_circle"] = float((np.abs(np.abs(eig) - 1) < self.tol).sum())
        table = {"real": eig.real.tolist(), "imag": eig.imag.tolist(), "abs": np.abs(eig).tolist()}
        return StepResult(metrics, {"eigenvalues": table})
