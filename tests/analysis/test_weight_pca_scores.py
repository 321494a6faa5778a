"""``weight_pca``'s components-for-a-fraction metric and its PC-score trajectories, and the
EDM steps on those scores (the weight-trajectory reproduction of jimzers/edm_nn)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from analysis.edm import CrossMapping, EmbedDimension
from analysis.spectra import WeightPCA
from trainers.trajectory import Trajectory


def planted(n: int = 400, seed: int = 0) -> Trajectory:
    """Two layers: 'a' moves along 3 directions (+ noise), 'b' along 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    coords = np.stack([t / n, np.sin(0.07 * t), 0.3 * np.cos(0.011 * t)], 1)
    a = coords @ rng.normal(size=(3, 30)) + 0.01 * rng.normal(size=(n, 30))
    b = np.outer(np.exp(-t / 100), rng.normal(size=8)) + 1e-3 * rng.normal(size=(n, 8))
    return Trajectory("w", t, np.concatenate([a, b], 1), {"a": [0, 30], "b": [30, 38]}, {})


def test_scores_equal_sklearn_pca_of_each_layer_up_to_sign():
    traj = planted()
    result = WeightPCA(components=4, batch=400, scores=3, scores_every=5).fit(traj)
    table = result.tables["scores"]
    np.testing.assert_array_equal(table["step"], traj.steps[::5])
    for label in ("a", "b"):
        ref = PCA(n_components=4).fit(traj.column(label))
        expected = ref.transform(traj.column(label))[::5, :3]
        got = np.stack([table[f"{label}/pc{i}"] for i in (1, 2, 3)], 1)
        signs = np.sign((got * expected).sum(0))
        np.testing.assert_allclose(got * signs, expected, atol=1e-8 * np.abs(expected).max())
        np.testing.assert_allclose(
            [result.metrics[f"{label}/explained_{i}"] for i in range(1, 5)],
            ref.explained_variance_ratio_,
            rtol=1e-10,
        )


def test_components_for_a_fraction_of_the_variance():
    traj = planted()
    ref = np.cumsum(PCA(n_components=10).fit(traj.column("a")).explained_variance_ratio_)
    for fraction in (0.5, 0.9, 0.99, 0.9999):
        result = WeightPCA(components=10, batch=400, cumulative=fraction).fit(traj)
        pct = f"{fraction * 100:g}".replace(".", "_")
        expected = int(np.argmax(ref >= fraction)) + 1 if ref[-1] >= fraction else None
        got = result.metrics[f"a/pcs_for_{pct}"]
        assert (np.isnan(got) and expected is None) or got == expected
    assert WeightPCA(components=10, batch=400).fit(traj).metrics["b/pcs_for_99"] == 1
    # two components cannot explain 99.99 % of three planted directions: NaN, not 2
    assert np.isnan(WeightPCA(components=2, cumulative=0.9999).fit(traj).metrics["a/pcs_for_99_99"])


def test_bad_scores_parameters_are_refused():
    with pytest.raises(ValueError, match="scores"):
        WeightPCA(components=3, scores=4)
    with pytest.raises(ValueError, match="cumulative"):
        WeightPCA(cumulative=1.5)


def coupled_logistic(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Sugihara et al. 2012: x drives y (β_yx = 0.32), y does not drive x."""
    x, y = np.empty(n), np.empty(n)
    x[0], y[0] = 0.4, 0.2
    for t in range(n - 1):
        x[t + 1] = x[t] * (3.8 - 3.8 * x[t])
        y[t + 1] = y[t] * (3.5 - 3.5 * y[t] - 0.32 * x[t])
    return x, y


def test_ccm_and_edm_on_pc_scores_find_the_driving_layer():
    # layer 'a' moves along one direction by x(t), layer 'b' by y(t), driven by x
    x, y = coupled_logistic()
    rng = np.random.default_rng(1)
    values = np.concatenate([np.outer(x, rng.normal(size=20)), np.outer(y, rng.normal(size=6))], 1)
    traj = Trajectory("w", np.arange(len(x)), values, {"a": [0, 20], "b": [20, 26]}, {})
    table = WeightPCA(components=2, batch=500, scores=1).fit(traj).tables["scores"]
    series = {"a/pc1": np.array(table["a/pc1"]), "b/pc1": np.array(table["b/pc1"])}
    ccm = CrossMapping(E=2, sample=20).fit(series).metrics
    # b's shadow manifold recovers its driver a; a's recovers little of b
    assert ccm["rho/b_pc1:a_pc1"] > 0.8 > ccm["rho/a_pc1:b_pc1"] + 0.3
    assert ccm["converges/b_pc1:a_pc1"] == 1
    # the logistic map is one-dimensional: its simplex forecast is best at E = 1 or 2
    assert EmbedDimension(max_E=6).fit(series["a/pc1"]).metrics["best_E"] <= 2
