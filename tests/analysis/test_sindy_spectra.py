"""SINDy, PDE-FIND and trajectory spectra on planted dynamics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from analysis.sindy import PDEFind, SINDy
from analysis.spectra import KoopmanSpectrum, WeightPCA
from dynsweep.errors import DataError
from trainers.trajectory import Trajectory


def lorenz(t, s, sigma=10.0, rho=28.0, beta=8 / 3):
    x, y, z = s
    return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]


def test_sindy_recovers_the_lorenz_coefficients_within_two_percent():
    dt = 0.002
    t = np.arange(0, 10, dt)
    sol = solve_ivp(lorenz, (0, 10), [-8, 8, 27], t_eval=t, rtol=1e-10, atol=1e-10).y.T
    data = {"x": sol[:, 0], "y": sol[:, 1], "z": sol[:, 2]}
    result = SINDy(degree=2, threshold=0.5, alpha=0.0, dt=dt).fit(data)
    m = result.metrics
    truth = {
        "coef/x'/x": -10,
        "coef/x'/y": 10,
        "coef/y'/x": 28,
        "coef/y'/y": -1,
        "coef/y'/x z": -1,
        "coef/z'/z": -8 / 3,
        "coef/z'/x y": 1,
    }
    for key, value in truth.items():
        assert m[key] == pytest.approx(value, rel=0.02), key
    assert m["terms"] == len(truth)  # nothing else
    assert "x" in result.tables["equations"]["rhs"][0]


def heat(noise: float, seed: int = 0):
    """u_t = 0.1 u_xx on a periodic grid, from a smooth start; ``noise``: relative."""
    nx, nt, dx, dt = 64, 200, 2 * np.pi / 64, 0.01
    x = np.arange(nx) * dx
    k = np.fft.fftfreq(nx, d=dx) * 2 * np.pi
    u0 = np.sin(x) + 0.5 * np.cos(3 * x) + 0.3 * np.sin(5 * x)
    t = np.arange(nt) * dt
    u = np.real(np.fft.ifft(np.fft.fft(u0)[None, :] * np.exp(-0.1 * k[None, :] ** 2 * t[:, None])))
    rng = np.random.default_rng(seed)
    return u + noise * np.std(u) * rng.normal(size=u.shape), dx, dt


def test_weak_pde_find_recovers_the_heat_equation_under_noise():
    u, dx, dt = heat(noise=0.01)
    weak = PDEFind(weak=True, dx=dx, dt=dt, threshold=0.02, K=200).fit(u).metrics
    assert weak["coef/u_t/u_11"] == pytest.approx(0.1, rel=0.05)
    assert weak["terms"] == 1


def test_pde_find_ensemble_reports_inclusion_probabilities():
    u, dx, dt = heat(noise=0.0)
    result = PDEFind(weak=False, dx=dx, dt=dt, threshold=0.02, ensemble=10).fit(u)
    table = result.tables["coefficients"]
    row = table["term"].index("u_11")
    assert table["mean"][row] == pytest.approx(0.1, rel=0.05)
    assert table["inclusion"][row] == 1.0 and table["std"][row] < 0.01


def test_weight_pca_finds_the_rank_of_a_planted_trajectory():
    rng = np.random.default_rng(0)
    steps = np.arange(600)
    basis = rng.normal(size=(3, 40))
    coords = np.stack([np.sin(0.05 * steps), np.cos(0.013 * steps), steps / 600.0], axis=1)
    values = np.concatenate([coords @ basis, rng.normal(size=(600, 10))], axis=1)
    values[:, 40:] *= 1e-3  # a second layer that barely moves
    traj = Trajectory("weights", steps, values, {"a": [0, 40], "b": [40, 50]}, {})
    result = WeightPCA(components=6, batch=100).fit(traj)
    assert result.metrics["a/rank"] == 3
    assert result.metrics["a/explained_1"] + result.metrics["a/explained_2"] > 0.5
    # PC1 of a slow sine peaks near its frequency, 0.05 / 2π cycles a step.
    assert result.metrics["a/psd_peak"] < 0.05
    with pytest.raises(DataError, match="no layer 'c'"):
        WeightPCA(layers=["c"]).fit(traj)


def test_koopman_spectrum_of_a_rotation_and_a_decay():
    angle = 0.3
    rotation = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    K = np.zeros((3, 3))
    K[:2, :2], K[2, 2] = rotation, 0.5
    m = KoopmanSpectrum().fit({"trainer": "koopman", "state": {"K": K}}).metrics
    assert m["spectral_radius"] == pytest.approx(1.0)
    assert m["unit_circle"] == 2 and m["eig_abs_3"] == pytest.approx(0.5)
    assert abs(m["eig_angle_1"]) == pytest.approx(angle)


def test_sindy_draws_the_coefficients_with_the_equation():
    import io

    from PIL import Image

    u, dx, dt = heat(noise=0.0)
    result = PDEFind(weak=False, dx=dx, dt=dt, threshold=0.02).fit(u)
    image = Image.open(io.BytesIO(result.figures["coefficients.png"]))
    assert image.format == "PNG" and image.height > 200
