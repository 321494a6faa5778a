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
    log-log slope of PC1's PSD: −2 for a random walk) and ``<layer>/pcs_for_<p>`` (the fewest
    leading components that explain the fraction ``cumulative`` of the variance, e.g.
    ``pcs_for_99`` for 0.99; NaN when the ``components`` fitted explain less). Tables:
    ``explained``, ``psd`` and, with ``scores: m``, ``scores``: the trajectory's coordinates
    on each layer's leading m components (``step``, ``<layer>/pc<i>``), every ``scores_every``
    recorded step — series that ``EmbedDimension``, ``SMapNonlinearity`` and ``CrossMapping``
    take. A component's sign is arbitrary (sklearn's SVD sign convention fixes it).
    """

    input_kind = "trajectory"

    def __init__(
        self,
        components: int = 5,
        layers: list[str] | None = None,
        batch: int = 256,
        rank_tol: float = 0.01,
        nperseg: int = 256,
        cumulative: float = 0.99,
        scores: int = 0,
        scores_every: int = 1,
    ):
        if components < 1 or batch < components:
            raise ValueError("components ≥ 1 and batch ≥ components expected")
        if not 0 < cumulative <= 1:
            raise ValueError("cumulative must lie in (0, 1]")
        if scores < 0 or scores > components or scores_every < 1:
            raise ValueError("0 ≤ scores ≤ components and scores_every ≥ 1 expected")
        self.components, self.layers, self.batch = components, layers, batch
        self.rank_tol, self.nperseg, self.cumulative = rank_tol, nperseg, cumulative
        self.scores, self.scores_every = scores, scores_every

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
        every = slice(None, None, self.scores_every)
        scores: dict[str, list] = {"step": steps[every].tolist()} if self.scores else {}
        pct = f"{self.cumulative * 100:g}".replace(".", "_")
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
            reached = np.flatnonzero(np.cumsum(ratios) >= self.cumulative - 1e-12)
            metrics[f"{label}/pcs_for_{pct}"] = float(reached[0] + 1) if len(reached) else np.nan
            for i in range(min(self.scores, k)):
                scores[f"{label}/pc{i + 1}"] = proj[every, i].tolist()
            metrics[f"{label}/psd_peak"] = (
                float(freq[1:][np.argmax(power[1:])]) if len(freq) > 1 else 0.0
            )
            metrics[f"{label}/psd_slope"] = slope
            psd_table["layer"] += [label] * len(freq)
            psd_table["frequency"] += freq.tolist()
            psd_table["power"] += power.tolist()
        tables = {"explained": explained, "psd": psd_table}
        if scores:
            tables["scores"] = scores
        return StepResult(metrics, tables)


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
