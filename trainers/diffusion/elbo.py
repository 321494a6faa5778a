"""The evidence lower bound of the inverse-heat-dissipation model (Rissanen et al. 2023, §3).

Forward (inference) process: q(u_k | x) = N(T(k) x, σ² I) for each k independently; generative
process: p(u_{k−1} | u_k) = N(u_k + f(u_k, k), δ² I), p(u_K) a mixture of N(T(K) x_i, δ² I)
over the M training images x_i (the sampler's start). The negative ELBO is

    L = L_K + Σ_{k=2..K} L_{k−1} + L_0,
    L_K     = KL(q(u_K | x) ‖ p(u_K)), either
              ``upper_bound``: log M − logsumexp_i(−KL_i), KL_i = KL(N(T(K) x, σ²) ‖ N(T(K) x_i,
              δ²)), the original's analytic (variational) upper bound ``L_K_upperbound``, or
              ``monte_carlo``: log q(u_K | x) − log p(u_K) at one draw u_K ~ q (unbiased)
    L_{k−1} = KL(q(u_{k−1} | x) ‖ p(u_{k−1} | u_k))
            = D/2 (σ²/δ² − 1 + log(δ²/σ²)) + ‖T(k−1) x − μ(u_k)‖² / (2 δ²)
    L_0     = −log p(x | u_1), a Gaussian N(μ(u_1), δ²) integrated over each pixel's 8-bit bin.

All in nats per image; ``bits_per_dim`` divides by D·ln 2. ``mse`` is the training loss's
squared error at each level, so L_{k−1} − const = mse_k / (2 δ²) ties the bound to the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from trainers.diffusion.forward import ForwardProcess
from trainers.diffusion.sampling import Model

PriorTerm = Literal["upper_bound", "monte_carlo"]


@dataclass
class ElboTerms:
    prior: float  # L_K, nats per image
    levels: list[float]  # L_{k−1} for k = K..2 in that order, nats per image
    data: float  # L_0, nats per image
    mse: list[float]  # per-image ‖T(k−1) x − μ(u_k)‖² for k = K..1
    dims: int

    @property
    def total(self) -> float:
        return self.prior + sum(self.levels) + self.data

    @property
    def bits_per_dim(self) -> float:
        return self.total / (self.dims * math.log(2))


def _sq_dists(u: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """‖u_b − means_i‖² for every pair: B×M, in float64."""
    flat = u.reshape(len(u), -1).double(), means.reshape(len(means), -1).double()
    return torch.cdist(*flat) ** 2


def _gauss_log_density(u: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(u_b; means_i, σ² I) for every pair: B×M."""
    d = u[0].numel()
    return -_sq_dists(u, means) / (2 * sigma**2) - d / 2 * math.log(2 * math.pi * sigma**2)


def prior_kl_bound(
    u_K: torch.Tensor, centres: torch.Tensor, sigma: float, delta: float
) -> torch.Tensor:
    """Upper bound of KL(N(u_K, σ² I) ‖ (1/M) Σ_i N(centres_i, δ² I)) per image (B).

    The bound of the original's ``L_K_upperbound``: with φ = softmax(−KL_i) it is
    Σ_i φ_i (KL_i + log φ_i + log M) = log M − logsumexp_i(−KL_i); exact when one mixture
    component dominates, as it does for well-separated T(K) x_i.
    """
    d = u_K[0].numel()
    kl = 0.5 * (
        d * sigma**2 / delta**2
        + _sq_dists(u_K, centres) / delta**2
        - d
        + 2 * d * math.log(delta / sigma)
    )
    return math.log(len(centres)) - torch.logsumexp(-kl, 1)


def _discretised_nll(x: torch.Tensor, mean: torch.Tensor, scale: float) -> torch.Tensor:
    """−log ∫_bin N(t; mean, scale²) dt per image, 256 bins on [0, 1], open end bins."""
    normal = torch.distributions.Normal(mean.double(), scale)
    half = 0.5 / 255
    upper = torch.where(x >= 1 - half, torch.inf, x.double() + half)
    lower = torch.where(x <= half, -torch.inf, x.double() - half)
    prob = (normal.cdf(upper) - normal.cdf(lower)).clamp_min(1e-12)
    return -prob.log().reshape(len(x), -1).sum(1)


@torch.no_grad()
def elbo(
    model: Model,
    forward: ForwardProcess,
    x: torch.Tensor,
    train: torch.Tensor,
    sigma: float,
    delta: float,
    generator: torch.Generator | None = None,
    prior: PriorTerm = "upper_bound",
) -> ElboTerms:
    """The negative ELBO of images ``x`` (B×C×H×W in [0, 1]), averaged over the batch;
    ``train`` are the images whose T(K) x_i centre the prior mixture."""
    if prior not in ("upper_bound", "monte_carlo"):
        raise ValueError(f"prior: expected upper_bound or monte_carlo, got {prior!r}")
    K, b, dims = forward.K, len(x), x[0].numel()
    device = x.device

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator).to(device)

    def level(k: int) -> torch.Tensor:
        return torch.full((b,), k, dtype=torch.long, device=device)

    u_K = forward(x, level(K))
    centres = forward(train, torch.full((len(train),), K, dtype=torch.long, device=device))
    if prior == "upper_bound":
        prior_nats = float(prior_kl_bound(u_K, centres, sigma, delta).mean())
    else:
        draw = u_K + sigma * noise(u_K)
        log_q = _gauss_log_density(draw, u_K, sigma).diagonal()
        log_p = torch.logsumexp(_gauss_log_density(draw, centres, delta), 1)
        prior_nats = float((log_q - log_p + math.log(len(train))).mean())

    const = dims / 2 * (sigma**2 / delta**2 - 1 + math.log(delta**2 / sigma**2))
    levels, mse = [], []
    for k in range(K, 0, -1):
        u = forward(x, level(k))
        u = u + sigma * noise(u)
        mean = u + model(u, level(k))
        if k == 1:
            data = float(_discretised_nll(x, mean, delta).mean())
        target = forward(x, level(k - 1))
        err = (target - mean).pow(2).reshape(b, -1).sum(1).mean()
        mse.append(float(err))
        if k > 1:
            levels.append(const + float(err) / (2 * delta**2))
    return ElboTerms(prior=prior_nats, levels=levels, data=data, mse=mse, dims=dims)
