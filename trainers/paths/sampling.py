"""Posterior sampling around a Bezier path: subspaces, potentials, NUTS chains, diagnostics.

The subspace comes from the SVD of the centred control points: θ = φ Π + μ (Π: K orthonormal
rows). Spaces (``q`` is what the sampler moves):
- ``line``: q ∈ ℝ, t = sigmoid(q), θ = b(t), a uniform prior on t;
- ``varphi``: q = φ ∈ ℝ^K, θ = φ Π + μ, prior N(0, prior_scale² I);
- ``lambda``: a tunnel around the curve: q = (s, ξ), t = sigmoid(s), φ = c(t) + r Σ ξ_i N_i(t)
  with c the curve in subspace coordinates, N_i(t) a rotation-minimising frame along it and r
  the tube scale; prior: t uniform in arc length (the correction log ‖c′(t)‖ / L), ξ ~ N(0, I);
- ``fullspace``: q = θ ∈ ℝ^P (all weights, the baseline), prior N(0, prior_scale² I).
The likelihood is tempered: U(q) = −(1/T) log p(y | θ(q)) − log p(q). The sampler is pyro's
NUTS driven one transition at a time (so the training loop owns the iterations); diagnostics
(R-hat, bulk ESS, PSIS-LOO) come from ArviZ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainers.paths import bezier


@dataclass
class Subspace:
    mean: torch.Tensor  # P
    basis: torch.Tensor  # K×P, orthonormal rows
    singular_values: torch.Tensor  # K

    @classmethod
    def from_control_points(cls, theta: torch.Tensor) -> Subspace:
        mean = theta.mean(0)
        _, s, vh = torch.linalg.svd(theta - mean, full_matrices=False)
        k = len(theta) - 1  # centred K+1 points span at most K dimensions
        return cls(mean, vh[:k], s[:k])

    def coords(self, theta: torch.Tensor) -> torch.Tensor:
        return (theta - self.mean) @ self.basis.T

    def weights(self, phi: torch.Tensor) -> torch.Tensor:
        return phi @ self.basis + self.mean


def parametrisation(
    space: str, theta: torch.Tensor, prior_scale: float, tube_scale: float = 0.1
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(dimension, q ↦ flat weights, q ↦ log prior) of ``space`` around control points θ."""
    if space == "line":

        def weights(q):
            return bezier.point(theta, torch.sigmoid(q).reshape(1))[0]

        def log_prior(q):  # uniform t on (0, 1), in the coordinates q = logit(t)
            return (torch.nn.functional.logsigmoid(q) + torch.nn.functional.logsigmoid(-q)).sum()

        return 1, weights, log_prior
    gauss = _gaussian(prior_scale)
    if space == "lambda":
        return _tunnel(theta, tube_scale)
    if space == "varphi":
        sub = Subspace.from_control_points(theta)
        return len(sub.basis), sub.weights, gauss
    if space == "fullspace":
        return theta.shape[1], lambda q: q, gauss
    raise ValueError(f"space: expected line, varphi, lambda or fullspace, got {space!r}")


def _gaussian(scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def log_prior(q):
        return -0.5 * (q / scale).pow(2).sum() - q.numel() * math.log(
            scale * math.sqrt(2 * math.pi)
        )

    return log_prior


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
    """chains × draws × dim samples of exp(−potential), chains started around ``start``."""
    out = []
    for c in range(chains):
        torch.manual_seed(seed + c)
        init = start + jitter * torch.randn_like(start)
        chain = Chain(potential, init, warmup)
        for _ in range(warmup):
            chain.step()
        out.append(torch.stack([chain.step().clone() for _ in range(draws)]))
    return torch.stack(out)


def diagnostics(samples: torch.Tensor, log_lik: torch.Tensor) -> dict[str, float]:
    """R-hat (max over dimensions), bulk ESS (min), LPPD and PSIS-LOO elpd, by ArviZ.

    ``samples``: chains × draws × dim; ``log_lik``: chains × draws × n (pointwise, test data).
    """
    import arviz as az
    import numpy as np

    idata = az.from_dict(
        posterior={"q": samples.detach().cpu().double().numpy()},
        log_likelihood={"y": log_lik.detach().cpu().double().numpy()},
    )
    rhat = az.rhat(idata, var_names=["q"])["q"].values
    ess = az.ess(idata, var_names=["q"], method="bulk")["q"].values
    ll = log_lik.detach().double().reshape(-1, log_lik.shape[-1])
    lppd = float((torch.logsumexp(ll, 0) - math.log(len(ll))).sum())
    loo = az.loo(idata, pointwise=False)
    return {
        "rhat_max": float(np.max(rhat)),
        "ess_bulk_min": float(np.min(ess)),
        "lppd": lppd,
        "elpd_loo": float(loo.elpd_loo),
    }


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


def _tunnel(theta: torch.Tensor, tube_scale: float, grid: int = 257):
    if len(theta) < 3:
        raise ValueError("space lambda needs a curve of order K >= 2 (a tube needs normals)")
    sub = Subspace.from_control_points(theta)
    coords = sub.coords(theta)  # the curve's control points in the K-dim subspace
    ts = torch.linspace(0, 1, grid, dtype=theta.dtype, device=theta.device)
    d1 = bezier.derivative(coords, ts)
    frames = rotation_minimising_frame(bezier.point(coords, ts), d1 / d1.norm(dim=1, keepdim=True))
    speed = d1.norm(dim=1)
    length = torch.trapezoid(speed, ts)
    k = coords.shape[1]

    def at(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame (re-orthonormalised between grid points) and the speed at t."""
        pos = t * (grid - 1)
        i = int(pos.detach().floor().clamp(0, grid - 2))
        w = pos - i
        q, r = torch.linalg.qr(((1 - w) * frames[i] + w * frames[i + 1]).T)
        return (q * torch.sign(torch.diagonal(r))).T, (1 - w) * speed[i] + w * speed[i + 1]

    def weights(q):
        t = torch.sigmoid(q[:1])
        frame, _ = at(t[0])
        phi = bezier.point(coords, t)[0] + tube_scale * q[1:] @ frame
        return sub.weights(phi)

    def log_prior(q):
        s, xi = q[0], q[1:]
        t = torch.sigmoid(s)
        _, v = at(t)
        jacobian = torch.nn.functional.logsigmoid(s) + torch.nn.functional.logsigmoid(-s)
        return (
            jacobian
            + torch.log(v / length)
            - 0.5 * (xi**2).sum()
            - 0.5 * (k - 1) * math.log(2 * math.pi)
        )

    return k, weights, log_prior
