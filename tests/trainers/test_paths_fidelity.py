"""The paths trainer against Dold et al.'s formulas, re-implemented here in numpy.

References: ``src/jax_subspace_curve.py`` (``UniformTSubspace.compute_loss``: the arc-length
weights ‖b′(t)‖ / L inside the differentiated loss, L by the trapezoid rule on 10,000 points)
and ``bezier_length_dnn_grid.py`` (``bezier_length``, ``mean_curvature``,
``mean_curvature2`` on 1,000 points of t).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.paths import bezier
from trainers.paths.packed import PackedPathsTrainer
from trainers.paths.trainer import PathsConfig, PathsTrainer


def coeff(order: int, t: np.ndarray) -> np.ndarray:
    """The original's ``bezier_coeff_fn(order + 1)(t)``: C(K, k) t^k (1 − t)^(K − k)."""
    k = np.arange(order + 1)
    binom = np.array([math.comb(order, int(i)) for i in k], dtype=np.float64)
    return binom * t[:, None] ** k * (1.0 - t[:, None]) ** (order - k)


def d_bezier(cp: np.ndarray, t: np.ndarray) -> np.ndarray:
    """b′(t), as the original's ``derivative_bezier``: n Σ_j B_{j,n−1}(t) (cp_{j+1} − cp_j)."""
    n = cp.shape[0] - 1
    return coeff(n - 1, t) @ (cp[1:] - cp[:-1]) * n


def dd_bezier(cp: np.ndarray, t: np.ndarray) -> np.ndarray:
    """b″(t): what the original's ``jax.jacrev(d_bezier)`` evaluates to."""
    n = cp.shape[0] - 1
    return coeff(n - 2, t) @ np.diff(cp, 2, axis=0) * n * (n - 1)


def original_curve_metrics(cp: np.ndarray) -> dict[str, float]:
    tt = np.linspace(0, 1, 1000)
    d1, d2 = d_bezier(cp, tt), dd_bezier(cp, tt)
    r1 = (d1 * d1).sum(1)
    r2 = (d2 * d2).sum(1)
    dot = (d1 * d2).sum(1)
    curvature = np.sqrt(r1 * r2 - dot**2) / r1 ** (3 / 2)  # mean_curvature2's ``single``
    return {
        "length": np.trapezoid(np.linalg.norm(d1, axis=-1), tt),  # bezier_length
        "mean_curvature_t": np.trapezoid(curvature, tt),  # mean_curvature2
        "b2_integral": np.trapezoid(np.linalg.norm(d2, axis=-1), tt),  # mean_curvature
    }


def test_curve_metrics_equal_the_originals_on_a_fixed_curve():
    cp = np.random.default_rng(3).normal(size=(5, 6))
    want = original_curve_metrics(cp)
    got = bezier.metrics(torch.tensor(cp))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    # The project's mean over arc length is another quantity: it must not pass for the original's.
    assert abs(got["mean_curvature_s"] - got["mean_curvature_t"]) > 0.01 * got["mean_curvature_t"]
    assert "mean_curvature" not in got


def _mlp(flat: np.ndarray, shapes: dict, x: np.ndarray) -> np.ndarray:
    """The project's network (nn.Linear: x Wᵀ + b, ReLU between) from flat weights."""
    params, start = [], 0
    for shape in shapes.values():
        n = int(np.prod(shape))
        params.append(flat[start : start + n].reshape(shape))
        start += n
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i].T + params[i + 1]
        if i + 2 < len(params):
            h = np.maximum(h, 0)
    return h


def original_uniform_t_loss(cp, t, x, y, shapes, log_scale=0.0, frozen_weights=None):
    """``UniformTSubspace.compute_loss`` at fixed samples t: Σ_n w_n NLL_n / n_samples."""
    tt = np.linspace(0.0, 1.0, 10_000)
    curve_length = np.trapezoid(np.linalg.norm(d_bezier(cp, tt), axis=-1), tt)
    weights = np.linalg.norm(d_bezier(cp, t), axis=-1) / curve_length
    if frozen_weights is not None:  # the detached variant: the weights are constants
        weights = frozen_weights
    scale = np.exp(log_scale) + 1e-8
    nll = []
    for flat in coeff(len(cp) - 1, t) @ cp:
        out = _mlp(flat, shapes, x).reshape(-1)
        nll.append(np.mean(0.5 * np.log(2 * np.pi) + np.log(scale) + (y - out) ** 2 / 2 / scale**2))
    return float(np.einsum("n,n->", weights, np.array(nll)) / len(t)), weights


def numeric_gradient(fn, cp: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(cp)
    for idx in np.ndindex(cp.shape):
        up, down = cp.copy(), cp.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (fn(up) - fn(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("weights", ["differentiated", "detached"])
def test_uniform_t_gradient_equals_the_originals(tmp_path, weights):
    cfg = PathsConfig(
        order=2, depth=1, width=3, uniform_t=True, uniform_t_weights=weights, dtype="float64",
        noise_init=1.0,  # log σ = 0, the reference's
    )  # fmt: skip
    trainer = PathsTrainer(cfg)
    trainer.setup(LocalContext(tmp_path))
    x, y = trainer.data["train"]
    x, y = x[:40], y[:40]
    t = torch.tensor([0.05, 0.3, 0.62, 0.97], dtype=torch.float64)
    loss = trainer.objective(t, x, y)
    loss.backward()
    got = trainer.theta.grad.numpy()

    cp, tn = trainer.theta.detach().numpy().copy(), t.numpy()
    xn, yn = x.numpy(), y.numpy().reshape(-1)
    value, w0 = original_uniform_t_loss(cp, tn, xn, yn, trainer.shapes)
    assert loss.item() == pytest.approx(value, rel=1e-7)
    frozen = w0 if weights == "detached" else None
    want = numeric_gradient(
        lambda c: original_uniform_t_loss(c, tn, xn, yn, trainer.shapes, frozen_weights=frozen)[0],
        cp,
    )
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    if weights == "differentiated":  # the weights' own gradient is not negligible here
        fixed = numeric_gradient(
            lambda c: original_uniform_t_loss(c, tn, xn, yn, trainer.shapes, frozen_weights=w0)[0],
            cp,
        )
        assert np.abs(fixed - want).max() > 1e-3 * np.abs(want).max()


def test_packed_uniform_t_members_equal_unpacked_runs_in_float64(tmp_path):
    base = {"order": 3, "width": 8, "t_samples": 4, "dtype": "float64"}
    configs = [
        PathsConfig(**base, lr=0.02, uniform_t=True),
        PathsConfig(**base, lr=0.01, uniform_t=True, uniform_t_weights="detached"),
        PathsConfig(**base, lr=0.01),
    ]
    loop = LoopConfig(report_every=5, eval_every=10, checkpoint_every=20)
    ctx = LocalContext.packed(tmp_path / "pack", len(configs))
    fit(PackedPathsTrainer(configs, [0, 1, 2]), ctx, loop, StopRule(iterations=20))
    for i, config in enumerate(configs):
        alone = LocalContext(tmp_path / f"alone{i}", seed=i)
        fit(PathsTrainer(config), alone, loop, StopRule(iterations=20))
        member = ctx.members[i]
        assert [s for s, _ in member.metrics] == [s for s, _ in alone.metrics]
        for (step, got), (_, want) in zip(member.metrics, alone.metrics):
            assert got.keys() == want.keys(), step
            for key in want:
                assert math.isclose(got[key], want[key], rel_tol=1e-12, abs_tol=1e-12), (
                    i,
                    step,
                    key,
                )
