"""Bezier curves through weight space: b(t) = Σ_k C(K, k) t^k (1 − t)^{K−k} θ_k, t ∈ [0, 1].

Control points are the rows of θ ((K+1)×P). Everything here is batched over ``t`` and
differentiable in θ.
"""

from __future__ import annotations

import functools
import math

import torch


def bernstein(t: torch.Tensor, order: int) -> torch.Tensor:
    """B_{k,K}(t) for k = 0..K: len(t)×(K+1)."""
    k = torch.arange(order + 1, dtype=t.dtype, device=t.device)
    binom = torch.tensor([math.comb(order, int(i)) for i in k], dtype=t.dtype, device=t.device)
    t = t[:, None]
    return binom * t**k * (1 - t) ** (order - k)


def point(theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """b(t): len(t)×P."""
    return bernstein(t, len(theta) - 1) @ theta


def derivative(theta: torch.Tensor, t: torch.Tensor, nth: int = 1) -> torch.Tensor:
    """The ``nth`` derivative b^(n)(t): a Bezier curve of order K − n over the n-th forward
    differences of the control points, times K!/(K−n)!."""
    order = len(theta) - 1
    if nth > order:
        return torch.zeros(len(t), theta.shape[1], dtype=theta.dtype, device=theta.device)
    diffs = theta
    for _ in range(nth):
        diffs = diffs[1:] - diffs[:-1]
    return math.perm(order, nth) * point(diffs, t)


def _differences(theta: torch.Tensor, nth: int) -> torch.Tensor:
    for _ in range(nth):
        theta = theta[1:] - theta[:-1]
    return theta


def speed(theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """‖b′(t)‖, from the K×K Gram matrix of the control points' differences (b′(t) =
    K Σ_j B_{j,K−1}(t) Δθ_j): a cost of K²·P once, then K² per t instead of P per t."""
    order = len(theta) - 1
    if order == 0:
        return torch.zeros(len(t), dtype=theta.dtype, device=theta.device)
    d1 = _differences(theta, 1)
    w = bernstein(t, order - 1)
    squared = order**2 * ((w @ (d1 @ d1.T)) * w).sum(1)
    positive = squared > 0  # √ at 0 has an infinite derivative: give it 0 instead
    return torch.where(positive, torch.where(positive, squared, 1).sqrt(), 0)


def arc_length_t(theta: torch.Tensor, n: int, grid: int = 2049) -> torch.Tensor:
    """``n`` parameters t whose points are equally spaced in arc length along the curve
    (midpoints of n equal arc-length cells), by inverting the cumulative length on a grid."""
    ts = torch.linspace(0, 1, grid, dtype=theta.dtype, device=theta.device)
    v = speed(theta.detach(), ts)
    cumulative = torch.cat(
        [v.new_zeros(1), torch.cumsum((v[1:] + v[:-1]) / 2 * (ts[1] - ts[0]), 0)]
    )
    targets = (torch.arange(n, dtype=theta.dtype, device=theta.device) + 0.5) / n * cumulative[-1]
    idx = torch.searchsorted(cumulative, targets).clamp(1, grid - 1)
    lo, hi = cumulative[idx - 1], cumulative[idx]
    frac = (targets - lo) / (hi - lo).clamp_min(1e-30)
    return ts[idx - 1] + frac * (ts[idx] - ts[idx - 1])


def arc_length_weights(
    theta: torch.Tensor, t: torch.Tensor, grid: int = 10_000, detach: bool = False
) -> torch.Tensor:
    """‖b′(t)‖ / L, L = ∫₀¹ ‖b′‖ dt by the trapezoid rule on ``grid`` points (10,000, as Dold
    et al.'s ``UniformTSubspace.compute_loss``): the weights that turn a mean over t ~ U(0, 1)
    into a mean uniform in arc length. Differentiable in θ unless ``detach``. Computed in
    float64 (a float32 curve's weights and their gradient would carry rounding noise that
    Adam amplifies where the loss's own gradient is small, e.g. at dead units)."""
    th = (theta.detach() if detach else theta).double()
    ts = torch.linspace(0, 1, grid, dtype=torch.float64, device=theta.device)
    length = torch.trapezoid(speed(th, ts), ts)
    return (speed(th, t.double()) / length.clamp_min(1e-12)).to(theta.dtype)


def metrics(theta: torch.Tensor, grid: int = 1000) -> dict[str, float]:
    """The curve's geometry by the trapezoid rule on ``grid`` points of t (1,000, as Dold et
    al.'s ``bezier_length_dnn_grid.py``), with κ = √(‖b′‖²‖b″‖² − (b′·b″)²) / ‖b′‖³:

    - ``length`` ∫‖b′‖ dt; ``chord`` ‖θ_K − θ_0‖; ``polygon`` Σ‖θ_{k+1} − θ_k‖ (≥ length);
    - ``mean_curvature_t`` ∫₀¹ κ dt: the original's "Average curvature" (``mean_curvature2``),
      a mean over the parameter t, so it depends on how the curve is parametrised;
    - ``b2_integral`` ∫₀¹ ‖b″‖ dt: the original's ``mean_curvature`` (not a curvature: it
      scales with the curve);
    - ``mean_curvature_s`` ∫κ ds / length = ∫κ‖b′‖ dt / length: the mean over arc length
      (this project's; independent of the parametrisation)."""
    with torch.no_grad():
        t = torch.linspace(0, 1, grid, dtype=torch.float64, device=theta.device)
        th = theta.double()
        order = len(th) - 1
        # ‖b′‖², ‖b″‖² and b′·b″ on the grid from the Gram matrix of the first and second
        # differences (P-dimensional work once, not once per grid point).
        v2 = speed(th, t) ** 2
        if order >= 2:
            d1, d2 = _differences(th, 1), _differences(th, 2)
            w, u = bernstein(t, order - 1), bernstein(t, order - 2)
            a2 = (order * (order - 1)) ** 2 * ((u @ (d2 @ d2.T)) * u).sum(1)
            va = order**2 * (order - 1) * ((w @ (d1 @ d2.T)) * u).sum(1)
        else:
            a2 = va = torch.zeros_like(v2)
        v = v2.sqrt()
        cross = (v2 * a2 - va**2).clamp_min(0).sqrt()
        kappa = cross / v.clamp_min(1e-30) ** 3
        length = float(torch.trapezoid(v, t))
        bending = float(torch.trapezoid(kappa * v, t))
        return {
            "length": length,
            "chord": float((th[-1] - th[0]).norm()),
            "polygon": float((th[1:] - th[:-1]).norm(dim=1).sum()),
            "mean_curvature_t": float(torch.trapezoid(kappa, t)),
            "b2_integral": float(torch.trapezoid(a2.clamp_min(0).sqrt(), t)),
            "mean_curvature_s": bending / length if length > 0 else 0.0,
        }


# Batched forms for packed trainers: B curves at once, θ B×(K+1)×P. Each curve's values equal
# the functions above up to float rounding (the same formulas, summed in another order).


def points(theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """b(t) of each curve at its own ``t`` (B×n): B×n×P, one batched product."""
    w = bernstein(t.reshape(-1), theta.shape[1] - 1).reshape(*t.shape, -1)
    return w @ theta


def _quadratic(w: torch.Tensor, gram: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """w(t)ᵀ G u(t) for every curve and t. Weights on one grid shared by every curve (n×K):
    one product (B × K²) @ (K² × n) of the Gram matrices with the grid's weight products;
    weights per curve (B×n×K): per curve, as :func:`speed`."""
    u = w if u is None else u
    if w.dim() == 2:
        outer = (w[:, :, None] * u[:, None, :]).reshape(len(w), -1)
        return gram.reshape(len(gram), -1) @ outer.T
    return ((w @ gram) * u).sum(-1)


def _root(squared: torch.Tensor) -> torch.Tensor:
    positive = squared > 0  # √ at 0 has an infinite derivative: give it 0 instead
    return torch.where(positive, torch.where(positive, squared, 1).sqrt(), 0)


def speeds(theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """‖b′(t)‖ per curve: ``t`` one grid (n, shared: B×n) or each curve's own (B×n)."""
    order = theta.shape[1] - 1
    if order == 0:
        return torch.zeros(len(theta), t.shape[-1], dtype=theta.dtype, device=theta.device)
    w = bernstein(t.reshape(-1), order - 1).reshape(*t.shape, -1)
    d1 = theta[:, 1:] - theta[:, :-1]
    return _root(order**2 * _quadratic(w, d1 @ d1.mT))


@functools.lru_cache(maxsize=8)
def _length_grid(order: int, grid: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For the length of curves of ``order`` on ``grid`` points of t (float64): the products
    B_{i,K−1}(t) B_{j,K−1}(t) (grid × K²) and the trapezoid rule's weights (grid)."""
    ts = torch.linspace(0, 1, grid, dtype=torch.float64, device=device)
    w = bernstein(ts, order - 1)
    outer = (w[:, :, None] * w[:, None, :]).reshape(grid, -1)
    dx = ts.diff()
    rule = torch.zeros_like(ts)
    rule[1:] += dx / 2
    rule[:-1] += dx / 2
    return outer, rule


class _Length(torch.autograd.Function):
    """L = Σ_g c_g √(K² G·(w(t_g) ⊗ w(t_g))) for Gram matrices G (B×K²): one matrix product
    and square roots in place (√ at 0: gradient 0, as :func:`speed`)."""

    @staticmethod
    def forward(ctx, gram: torch.Tensor, outer: torch.Tensor, rule: torch.Tensor, order: int):
        speed = (order**2 * (gram @ outer.T)).clamp_min_(0).sqrt_()
        ctx.save_for_backward(speed, outer, rule)
        ctx.order = order
        return speed @ rule

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        speed, outer, rule = ctx.saved_tensors
        squared = (grad[:, None] * rule) / (2 * speed)
        squared.masked_fill_(speed == 0, 0)
        return ctx.order**2 * (squared @ outer), None, None, None


def arc_length_weights_batch(theta: torch.Tensor, t: torch.Tensor, grid: int = 10_000):
    """:func:`arc_length_weights` of each curve at its own ``t`` (B×n): B×n, differentiable
    in θ (pass ``θ.detach()`` rows for constant weights). The 10,000-point grid is one matrix
    product for all curves (its weights computed once a process), not B."""
    th = theta.double()
    order = th.shape[1] - 1
    if order == 0:
        return torch.zeros_like(t)
    d1 = th[:, 1:] - th[:, :-1]
    outer, rule = _length_grid(order, grid, th.device)
    length = _Length.apply((d1 @ d1.mT).reshape(len(th), -1), outer, rule, order)
    return (speeds(th, t.double()) / length.clamp_min(1e-12)[:, None]).to(theta.dtype)


def metrics_batch(theta: torch.Tensor, grid: int = 1000) -> dict[str, list[float]]:
    """:func:`metrics` of each curve (B×(K+1)×P): one list of B values per quantity."""
    with torch.no_grad():
        t = torch.linspace(0, 1, grid, dtype=torch.float64, device=theta.device)
        th = theta.double()
        order = th.shape[1] - 1
        v2 = speeds(th, t) ** 2
        d1 = th[:, 1:] - th[:, :-1]
        if order >= 2:
            d2 = d1[:, 1:] - d1[:, :-1]
            g12, g22 = d1 @ d2.mT, d2 @ d2.mT
            w, u = bernstein(t, order - 1), bernstein(t, order - 2)
            a2 = (order * (order - 1)) ** 2 * _quadratic(u, g22)
            va = order**2 * (order - 1) * _quadratic(w, g12, u)
        else:
            a2 = va = torch.zeros_like(v2)
        v = v2.sqrt()
        cross = (v2 * a2 - va**2).clamp_min(0).sqrt()
        kappa = cross / v.clamp_min(1e-30) ** 3
        length = torch.trapezoid(v, t, dim=-1)
        bending = torch.trapezoid(kappa * v, t, dim=-1)
        values = {
            "length": length,
            "chord": (th[:, -1] - th[:, 0]).norm(dim=-1),
            "polygon": d1.norm(dim=-1).sum(-1),
            "mean_curvature_t": torch.trapezoid(kappa, t, dim=-1),
            "b2_integral": torch.trapezoid(a2.clamp_min(0).sqrt(), t, dim=-1),
            "mean_curvature_s": torch.where(length > 0, bending / length, 0.0),
        }
        return {k: v.tolist() for k, v in values.items()}
