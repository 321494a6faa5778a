"""The evidence lower bound of the inverse-heat-dissipation model (Rissanen et al. 2023, §3).

Forward (inference) process: q(u_k | x) = N(T(k) x, σ² I) for each k independently; generative
process: p(u_{k−1} | u_k) = N(u_k + f(u_k, k), δ² I), p(u_K) a mixture of N(T(K) x_i, σ² I)
over training images x_i. The negative ELBO is

    L = L_K + Σ_{k=2..K} L_{k−1} + L_0,
    L_K     = E_q[log q(u_K | x) − log p(u_K)]                       (Monte Carlo, one draw)
    L_{k−1} = KL(q(u_{k−1} | x) ‖ p(u_{k−1} | u_k))
            = D/2 (σ²/δ² − 1 + log(δ²/σ²)) + ‖T(k−1) x − μ(u_k)‖² / (2 δ²)
    L_0     = −log p(x | u_1), a Gaussian N(μ(u_1), δ²) integrated over each pixel's 8-bit bin.

All in nats per image; ``bits_per_dim`` divides by D·ln 2. ``mse`` is the training loss's
squared error at each level, so L_{k−1} − const = mse_k / (2 δ²) ties the bound to the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainers.diffusion.forward import ForwardProcess
from trainers.diffusion.sampling import Model


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


def _gauss_log_density(u: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(u_b; means_i, σ² I) for every pair: B×M."""
    d = u[0].numel()
    sq = torch.cdist(u.reshape(len(u), -1).double(), means.reshape(len(means), -1).double()) ** 2
    return -sq / (2 * sigma**2) - d / 2 * math.log(2 * math.pi * sigma**2)


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
) -> ElboTerms:
    """The negative ELBO of images ``x`` (B×C×H×W in [0, 1]), averaged over the batch."""
    K, b, dims = forward.K, len(x), x[0].numel()
    device = x.device

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator).to(device)

    def level(k: int) -> torch.Tensor:
        return torch.full((b,), k, dtype=torch.long, device=device)

    u_K = forward(x, level(K))
    draw = u_K + sigma * noise(u_K)
    log_q = _gauss_log_density(draw, u_K, sigma).diagonal()
    centres = forward(train, torch.full((len(train),), K, dtype=torch.long, device=device))
    log_p = torch.logsumexp(_gauss_log_density(draw, centres, sigma), 1) - math.log(len(train))
    prior = float((log_q - log_p).mean())

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
    return ElboTerms(prior=prior, levels=levels, data=data, mse=mse, dims=dims)
