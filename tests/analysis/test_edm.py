from __future__ import annotations

import numpy as np
import pytest

from analysis.edm import EmbedDimension
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
