"""The dataset's own PDE (``dataset_pde``): the original's preprocessing and threshold search
(``src/helpers.py``: ``moving_average``, ``min_max_fit``, ``next_threshold_func``), re-implemented
in numpy here, and PDE-FIND on generated fields and on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.dataset_pde import DatasetPDE, dataset_field, min_max, moving_average, term_name
from analysis.runner import load_input


def original_moving_average(a: np.ndarray, n: int) -> np.ndarray:
    ret = np.cumsum(a, axis=0, dtype=float)
    ret[n:] = ret[n:] - ret[:-n]
    return ret[n - 1 :] / n


def test_moving_average_and_scaling_match_the_originals():
    a = np.arange(24, dtype=float).reshape(8, 3) ** 1.5
    for n in (1, 3, 5):
        np.testing.assert_allclose(moving_average(a, n), original_moving_average(a, n))
    # a window mean: rows i … i + n − 1
    np.testing.assert_allclose(moving_average(a, 3)[0], a[:3].mean(0))
    scaled = min_max(a)
    expected = (a - a.min()) / (a.max() - a.min())  # min_max_fit(A, 0, 1)
    np.testing.assert_allclose(scaled, expected)
    with pytest.raises(Exception, match="constant"):
        min_max(np.ones(4))


def test_the_next_thresholds_are_the_originals():
    step = DatasetPDE()
    # counts found at the two ends: 0 terms at 206, 4 terms at 35 -> look for 1 term between
    found = {0: [(206.0, 1.0)], 4: [(35.0, 2.0)]}
    wanted = [0, 1, 2, 3, 4]
    n, probes = step._next(found, wanted)
    assert n == 1 and probes == pytest.approx([77.75, 120.5, 163.25])
    # 1 and 3 found: 2 lies between the largest threshold giving 2+ terms (3 terms at 60)
    # and the smallest giving fewer (1 term at 90, of two)
    found.update({1: [(90.0, 0.5), (120.0, 0.7)], 3: [(50.0, 0.1), (60.0, 0.2)]})
    n, probes = step._next(found, wanted)
    assert n == 2 and probes == pytest.approx(np.linspace(60.0, 90.0, 5)[1:4])
    # an interval closed within tol: that count is given up (its probes still run once)
    found = {1: [(50.0, 0.0)], 3: [(50.0 + 1e-9, 0.0)]}
    wanted = [1, 2, 3]
    n, probes = step._next(found, wanted)
    assert n == 2 and 2 not in wanted and len(probes) == 3
    assert step._next(found, wanted) == (None, [])


def test_term_names():
    assert term_name("1") == "1"
    assert term_name("x0") == "u"
    assert term_name("x0^2") == "u^2"
    assert term_name("x0_11") == "u_xx"
    assert term_name("x0x0_1") == "uu_x"
    assert term_name("x0^2x0_111") == "u^2u_xxx"


def advected_field(c: float = 0.3, nx: int = 40, nt: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """u(t, x) = a Gaussian moving at speed c: u_t = −c u_x."""
    x = np.linspace(0.0, 10.0, nx)
    t = np.arange(nt, dtype=float)
    u = np.exp(-((x[None, :] - 3.0 - c * t[:, None]) ** 2) / 2.0)
    return u, x


@pytest.mark.parametrize("pick", ["max_score", pytest.param("min_rmse", marks=pytest.mark.slow)])
def test_a_one_term_advection_is_found_with_its_scaled_speed(pick):
    u, x = advected_field()
    step = DatasetPDE(
        start=0, stop=60, degree=1, derivative_order=2, thresholds=(1e-2, 1e2), pick=pick,
        timeout=10,
    )  # fmt: skip
    found = step.fit_field(u, x)
    threshold, score, coefs = found[1]
    # scaled to [0, 1]: u_t' = −c (T / X) u_x' with T = 59 rows, X = 10
    assert list(coefs) == ["u_x"]
    assert coefs["u_x"] == pytest.approx(-0.3 * 59 / 10, rel=0.03)
    assert 1e-2 <= threshold <= 1e2 and np.isfinite(score)
    assert max(found) > 1  # the low end of the thresholds keeps more terms


def test_the_digits_field_and_its_pde_end_to_end(tmp_path):
    u, radii = dataset_field("digits", tmp_path, p=2.0, half_width=0.5)
    assert u.shape == (64, len(radii)) and (u >= 0).all()
    # eigenimage 0 of non-negative images carries the mean: most of its energy at r = 1
    assert u[0].argmax() == 0
    cached = tmp_path / "spectra" / "digits-eigen-spectra-all.npy"
    assert cached.exists()  # the eigen-spectra are kept for the next trial, and read back
    np.save(cached, np.load(cached) * 2)
    twice, _ = dataset_field("digits", tmp_path, p=2.0, half_width=0.5)
    np.testing.assert_allclose(twice, 2 * u)
    np.save(cached, np.load(cached) / 2)
    step = DatasetPDE(
        dataset="digits", data_dir=str(tmp_path), p=2.0, half_width=0.5, start=2, stop=40,
        derivative_order=1, thresholds=(0.01, 500.0),
    )  # fmt: skip
    result = step.fit()
    assert result.metrics["terms_found"] == len(result.tables["equations"]["terms"]) >= 2
    coefs = [k for k in result.metrics if k.startswith("coef/")]
    assert coefs and all("^" not in k for k in coefs)  # MLflow metric names
    assert len(result.tables["field"]["u"]) == u.size


def test_ring_settings_default_to_the_datasets_and_bad_params_are_named():
    assert DatasetPDE(dataset="fashion_mnist").ring_settings() == {
        "p": 1.0,
        "half_width": 0.5,
        "radius_mult": 1.0,
    }
    assert DatasetPDE(dataset="fashion_mnist", half_width=1.0).ring_settings()["half_width"] == 1
    with pytest.raises(ValueError, match="pick"):
        DatasetPDE(pick="best")
    with pytest.raises(ValueError, match="thresholds"):
        DatasetPDE(thresholds=(5.0, 1.0))
    assert load_input("dataset", "dataset", "sqlite:///unused.db", "run") == (None, None)
