"""Posterior sampling around a Bezier path: subspaces, spaces, NUTS chains.

The subspace comes from the SVD of the centred control points, θ − μ = U S Vᵀ. With the
original's ``scaled`` basis (Dold et al., ``OrthoSpan``) θ = φ Π + μ with Π = S_K V_Kᵀ, so the
coordinates φ are in singular-value units (φ of the control points has unit-scale spread);
``orthonormal`` uses Π = V_Kᵀ (φ in weight units). Spaces (``q`` is what the sampler moves):
- ``line``: q ∈ ℝ (``line_inert``: ℝ^K, K − 1 coordinates that nothing depends on, as the
  original's state carries them), t = a + (b − a) sigmoid(q₀) on (a, b) = (−margin, 1 + margin) (the
  original's (−0.1, 1.1)), φ = c(t); prior: t uniform in arc length, log ‖c′(t)‖ − log L
  (L = ∫₀¹ ‖c′‖, c the curve in φ coordinates, as the original);
- ``varphi``: q = φ ∈ ℝ^K, prior N(0, prior_scale² I);
- ``lambda``: a tunnel around the curve: q = (s, ξ), t as for ``line``,
  φ = c(t) + r Σ ξ_i N_i(t) with N_i(t) a rotation-minimising frame along c and r the tube
  scale; prior: t as for ``line``, ξ ~ N(0, prior_scale² I) (the original's tube prior);
- ``fullspace``: q = θ ∈ ℝ^P (all weights, the baseline), prior N(0, prior_scale² I).
Every function of q here is written for one q and is ``torch.func.vmap``-able, so chains can be
evaluated together. :class:`Chain` is pyro's NUTS driven one transition at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from trainers.paths import bezier
from trainers.paths.diagnostics import diagnostics  # noqa: F401  (its former home)

Basis = Literal["scaled", "orthonormal"]
Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Subspace:
    mean: torch.Tensor  # P
    basis: torch.Tensor  # K×P: S_K V_Kᵀ (scaled) or V_Kᵀ (orthonormal rows)
    singular_values: torch.Tensor  # K
    scaled: bool = True

    @classmethod
    def from_control_points(cls, theta: torch.Tensor, basis: Basis = "scaled") -> Subspace:
        mean = theta.mean(0)
        _, s, vh = torch.linalg.svd(theta - mean, full_matrices=False)
        k = len(theta) - 1  # centred K+1 points span at most K dimensions
        scaled = basis == "scaled"
        return cls(mean, s[:k, None] * vh[:k] if scaled else vh[:k], s[:k], scaled)

    def coords(self, theta: torch.Tensor) -> torch.Tensor:
        phi = (theta - self.mean) @ self.basis.T
        return phi / self.singular_values**2 if self.scaled else phi  # rows of Π: ‖·‖ = s

    def weights(self, phi: torch.Tensor) -> torch.Tensor:
        return phi @ self.basis + self.mean


@dataclass
class Space:
    """A sampling space, written for a batch of q (C×dim, one row a chain): q ↦ φ (C×K; what
    R-hat and ESS are computed on, as the original: subspace coordinates; the weights for
    ``fullspace``), q ↦ log prior (C, with the Jacobian of the unconstrained coordinates),
    φ ↦ flat weights, and the q of the curve's point at t. The one-q forms (:meth:`phi`,
    :meth:`log_prior`, :meth:`weights`) wrap them and are ``torch.func.vmap``-able."""

    dim: int
    phi_batch: Fn
    log_prior_batch: Fn
    to_weights: Fn  # φ (… × K) ↦ flat weights (… × P)
    on_curve: Callable[[float], torch.Tensor]

    def phi(self, q: torch.Tensor) -> torch.Tensor:
        return self.phi_batch(q[None])[0]

    def log_prior(self, q: torch.Tensor) -> torch.Tensor:
        return self.log_prior_batch(q[None])[0]

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        return self.to_weights(self.phi(q))

    def weights_batch(self, q: torch.Tensor) -> torch.Tensor:
        return self.to_weights(self.phi_batch(q))


def space(
    name: str,
    theta: torch.Tensor,
    prior_scale: float,
    tube_scale: float = 0.1,
    basis: Basis = "scaled",
    t_margin: float = 0.1,
    line_inert: bool = False,
) -> Space:
    """The sampling space ``name`` around control points θ ((K+1)×P); ``line_inert``: the
    line's q also carries K − 1 inert coordinates (the original's unused ``tube``)."""
    gauss = gaussian(prior_scale)
    if name == "fullspace":

        def at_t(t: float) -> torch.Tensor:
            return bezier.point(theta, theta.new_tensor([t]))[0]

        return Space(theta.shape[1], _identity, gauss, _identity, at_t)
    sub = Subspace.from_control_points(theta, basis)
    coords = sub.coords(theta)  # the curve's control points in the K-dim subspace
    k = coords.shape[1]
    if name == "varphi":

        def phi_at(t: float) -> torch.Tensor:
            return bezier.point(coords, coords.new_tensor([t]))[0]

        return Space(k, _identity, gauss, sub.weights, phi_at)
    if name not in ("line", "lambda"):
        raise ValueError(f"space: expected line, varphi, lambda or fullspace, got {name!r}")
    lo, hi = -t_margin, 1 + t_margin
    log_t = _arc_length_t_prior(coords, lo, hi)
    if name == "line":

        def line_phi(q):
            return bezier.point(coords, lo + (hi - lo) * torch.sigmoid(q[:, 0]))

        def line_prior(q):
            return log_t(q[:, 0])

        inert = k - 1 if line_inert else 0

        def line_start(t: float) -> torch.Tensor:
            return theta.new_tensor([_logit((t - lo) / (hi - lo))] + [0.0] * inert)

        return Space(1 + inert, line_phi, line_prior, sub.weights, line_start)
    return _tunnel(sub, coords, tube_scale, gauss, log_t, lo, hi)


def _identity(q: torch.Tensor) -> torch.Tensor:
    return q


def gaussian(scale: float, loc: float = 0.0) -> Fn:
    """Rows of q (C×d) ↦ their log density under N(loc, scale² I): C."""

    def log_prior(q):
        return -0.5 * ((q - loc) / scale).pow(2).sum(-1) - q.shape[-1] * math.log(
            scale * math.sqrt(2 * math.pi)
        )

    return log_prior


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _arc_length_t_prior(coords: torch.Tensor, lo: float, hi: float) -> Fn:
    """s (C) ↦ log density of s, t = lo + (hi − lo) sigmoid(s) uniform in arc length: the
    logistic Jacobian plus log ‖c′(t)‖ − log L, L = ∫₀¹ ‖c′‖ on 10,000 points (as the original;
    up to the constant log(hi − lo) the original's Uniform(lo, hi) and its Jacobian cancel)."""
    grid = torch.linspace(0, 1, 10_000, dtype=coords.dtype, device=coords.device)
    log_length = math.log(float(torch.trapezoid(bezier.speed(coords, grid), grid)))

    def log_prior(s):
        t = lo + (hi - lo) * torch.sigmoid(s)
        jacobian = torch.nn.functional.logsigmoid(s) + torch.nn.functional.logsigmoid(-s)
        speed = bezier.speed(coords, t).clamp_min(1e-300)
        return jacobian + torch.log(speed) - log_length

    return log_prior


def rotation_minimising_frame(points: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """Normal frames along a polyline (n×d points, n×d unit tangents) by the double-reflection
    method (Wang et al. 2008): n×(d−1)×d, each frame orthonormal and ⊥ its tangent."""
    d = points.shape[1]
    basis, _ = torch.linalg.qr(torch.cat([tangents[:1].T, torch.eye(d, dtype=points.dtype)], 1))
    frame = basis[:, 1:d].T * torch.sign(basis[:, :1].T @ tangents[0])  # ⊥ the first tangent
    frames = [frame]
    for i in range(len(points) - 1):
        v1 = points[i + 1] - points[i]
        c1 = v1 @ v1
        if c1 < 1e-30:  # no movement: keep the frame
            frames.append(frame)
            continue
        r = frame - (2 / c1) * (frame @ v1)[:, None] * v1
        t_l = tangents[i] - (2 / c1) * (tangents[i] @ v1) * v1
        v2 = tangents[i + 1] - t_l
        c2 = v2 @ v2
        frame = r if c2 < 1e-30 else r - (2 / c2) * (r @ v2)[:, None] * v2
        frames.append(frame)
    return torch.stack(frames)


def _tunnel(sub, coords, tube_scale, gauss, log_t, lo, hi, grid: int = 301) -> Space:
    if len(coords) < 3:
        raise ValueError("space lambda needs a curve of order K >= 2 (a tube needs normals)")
    ts = torch.linspace(lo, hi, grid, dtype=coords.dtype, device=coords.device)
    d1 = bezier.derivative(coords, ts)
    frames = rotation_minimising_frame(bezier.point(coords, ts), d1 / d1.norm(dim=1, keepdim=True))

    def frame_at(t: torch.Tensor) -> torch.Tensor:
        """The frames at t (C): C×(K−1)×K, interpolated and re-orthonormalised between grid
        points."""
        pos = (t - lo) / (hi - lo) * (grid - 1)
        i = pos.detach().floor().clamp(0, grid - 2).long()
        w = (pos - i)[:, None, None]
        mixed = (1 - w) * frames.index_select(0, i) + w * frames.index_select(0, i + 1)
        q, r = torch.linalg.qr(mixed.mT)
        return (q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]).mT

    def phi(q):
        t = lo + (hi - lo) * torch.sigmoid(q[:, 0])
        offset = (q[:, None, 1:] @ frame_at(t))[:, 0]
        return bezier.point(coords, t) + tube_scale * offset

    def log_prior(q):
        return log_t(q[:, 0]) + gauss(q[:, 1:])

    def start(t: float) -> torch.Tensor:
        q = coords.new_zeros(coords.shape[1])
        q[0] = _logit((t - lo) / (hi - lo))
        return q

    return Space(coords.shape[1], phi, log_prior, sub.weights, start)


class Chain:
    """One NUTS chain advanced a transition at a time; counts gradient evaluations."""

    def __init__(
        self, potential: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, warmup: int
    ) -> None:
        from pyro.infer.mcmc import NUTS

        self.evaluations = 0

        def counted(params):
            self.evaluations += 1
            return potential(params["q"])

        self.kernel = NUTS(potential_fn=counted, adapt_step_size=True, adapt_mass_matrix=True)
        self.params = {"q": start.detach().clone()}
        self.kernel.initial_params = self.params
        self.kernel.setup(warmup_steps=warmup)

    def step(self) -> torch.Tensor:
        self.params = self.kernel.sample(self.params)
        return self.params["q"]


def run_chains(
    potential,
    start: torch.Tensor,
    chains: int,
    warmup: int,
    draws: int,
    seed: int = 0,
    jitter: float = 0.1,
) -> torch.Tensor:
    """chains × draws × dim NUTS samples of exp(−potential), chains (one after another)
    started around ``start``."""
    out = []
    for c in range(chains):
        torch.manual_seed(seed + c)
        init = start + jitter * torch.randn_like(start)
        chain = Chain(potential, init, warmup)
        for _ in range(warmup):
            chain.step()
        out.append(torch.stack([chain.step().clone() for _ in range(draws)]))
    return torch.stack(out)
