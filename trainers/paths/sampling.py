"""Posterior sampling around a Bezier path: subspaces, potentials, NUTS chains, diagnostics.

The subspace comes from the SVD of the centred control points: θ = φ Π + μ (Π: K orthonormal
rows). Spaces (``q`` is what the sampler moves):
- ``line``: q ∈ ℝ, t = sigmoid(q), θ = b(t), a uniform prior on t;
- ``varphi``: q = φ ∈ ℝ^K, θ = φ Π + μ, prior N(0, prior_scale² I);
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
    space: str, theta: torch.Tensor, prior_scale: float
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(dimension, q ↦ flat weights, q ↦ log prior) of ``space`` around control points θ."""
    if space == "line":

        def weights(q):
            return bezier.point(theta, torch.sigmoid(q).reshape(1))[0]

        def log_prior(q):  # uniform t on (0, 1), in the coordinates q = logit(t)
            return (torch.nn.functional.logsigmoid(q) + torch.nn.functional.logsigmoid(-q)).sum()

        return 1, weights, log_prior
    gauss = _gaussian(prior_scale)
    if space == "varphi":
        sub = Subspace.from_control_points(theta)
        return len(sub.basis), sub.weights, gauss
    if space == "fullspace":
        return theta.shape[1], lambda q: q, gauss
    raise ValueError(f"space: expected line, varphi or fullspace, got {space!r}")


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
