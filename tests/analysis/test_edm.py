from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyEDM
import pytest

from analysis.ccm import cross_map
from analysis.edm import CrossMapping, EmbedDimension, SimplexSkill, SMapNonlinearity
from dynsweep.errors import DataError


def logistic(n: int, r: float = 3.9) -> np.ndarray:
    x = np.empty(n)
    x[0] = 0.4
    for i in range(n - 1):
        x[i + 1] = r * x[i] * (1 - x[i])
    return x


def test_logistic_map_needs_one_dimension():
    result = EmbedDimension(max_E=6).fit(logistic(400))
    assert result.metrics["best_E"] <= 2 and result.metrics["rho"] > 0.95
    assert result.tables["rho_by_E"]["E"] == [1, 2, 3, 4, 5, 6]


def test_two_frequency_signal_needs_more_than_one_dimension():
    t = np.arange(500)
    result = EmbedDimension(max_E=8).fit(np.sin(0.3 * t) + 0.5 * np.sin(0.71 * t))
    rho = result.tables["rho_by_E"]["rho"]
    assert result.metrics["best_E"] >= 3 and rho[result.metrics["best_E"] - 1] > rho[0]


def test_short_series_is_a_clear_error():
    with pytest.raises(DataError, match="too short"):
        EmbedDimension(max_E=10).fit(np.arange(12.0))


def coupled_logistic(n: int = 600, beta: float = 0.32) -> tuple[np.ndarray, np.ndarray]:
    """x drives y (Sugihara et al. 2012): y's dynamics contain x, not the other way."""
    x, y = np.empty(n), np.empty(n)
    x[0], y[0] = 0.4, 0.2
    for t in range(n - 1):
        x[t + 1] = x[t] * (3.8 - 3.8 * x[t])
        y[t + 1] = y[t] * (3.5 - 3.5 * y[t] - beta * x[t])
    return x, y


def test_ccm_finds_that_x_drives_y_and_not_the_reverse():
    x, y = coupled_logistic()
    result = CrossMapping(E=2, lib_sizes=(10, 50, 150, 400), sample=20).fit({"x": x, "y": y})
    m = result.metrics
    # y's shadow manifold recovers x (x drives y) and improves with the library size ...
    assert m["rho/y:x"] > 0.8 and m["converges/y:x"] == 1
    # ... while x's own dynamics carry little of y.
    assert m["rho/x:y"] < 0.5 and m["rho/y:x"] - m["rho/x:y"] > 0.4


def test_batched_cross_map_equals_pyedm_pair_by_pair():
    rng = np.random.default_rng(3)
    x, y = coupled_logistic(300)
    series = np.stack([x, y, np.sin(np.arange(300) * 0.2) + 0.1 * rng.normal(size=300)])
    sizes = [10, 60, 200]
    for E, tau, Tp in [(2, -1, 0), (3, -2, 1)]:
        skill = cross_map(series, E, sizes, sample=7, seed=11, tau=tau, Tp=Tp)
        names = ["a", "b", "c"]
        frame = pd.DataFrame({"Time": np.arange(1, 301), **dict(zip(names, series))})
        for i in range(3):
            for j in range(i + 1, 3):
                ref = pyEDM.CCM(
                    dataFrame=frame,
                    columns=names[i],
                    target=names[j],
                    libSizes=sizes,
                    sample=7,
                    E=E,
                    tau=tau,
                    Tp=Tp,
                    seed=11,
                    parallel=False,
                )
                np.testing.assert_allclose(skill[i, j], ref[f"{names[i]}:{names[j]}"], atol=1e-6)
                np.testing.assert_allclose(skill[j, i], ref[f"{names[j]}:{names[i]}"], atol=1e-6)


def test_smap_sees_nonlinearity_in_a_chaotic_map_and_none_in_a_linear_one():
    chaotic = SMapNonlinearity(E=2).fit(logistic(400)).metrics
    assert chaotic["nonlinearity"] > 0.1 and chaotic["best_theta"] > 0
    rng = np.random.default_rng(0)
    ar = np.zeros(400)
    for t in range(399):
        ar[t + 1] = 0.8 * ar[t] + rng.normal()
    linear = SMapNonlinearity(E=2).fit(ar).metrics
    assert linear["nonlinearity"] < chaotic["nonlinearity"] / 3
    skill = SimplexSkill(E=2).fit(logistic(400)).metrics
    assert skill["rho"] > 0.9 and skill["RMSE"] < 0.1


def test_edm_smap_and_ccm_draw_their_figures():
    from PIL import Image

    figures = {
        **EmbedDimension(max_E=4).fit(logistic(200)).figures,
        **SMapNonlinearity(E=2).fit(logistic(200)).figures,
        **CrossMapping(E=2, lib_sizes=(10, 50, 150))
        .fit({"a": logistic(200), "b": logistic(200, r=3.7)})
        .figures,
    }
    assert set(figures) == {"rho_by_E.png", "rho_by_theta.png", "convergence.png"}
    for data in figures.values():
        assert Image.open(io.BytesIO(data)).format == "PNG"
