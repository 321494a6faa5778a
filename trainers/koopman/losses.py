"""Losses and estimators of evolution-operator ("Koopman") learning, as small functions.

Conventions: ``x`` holds the embeddings of states at time t and ``y`` those at t + 1, both
N×d (rows are samples).
"""

from __future__ import annotations

import torch


def covariances(x: torch.Tensor, y: torch.Tensor, center: bool = False):
    """(C_x, C_y, C_xy), each normalised by N."""
    if center:
        x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    return x.T @ x / n, y.T @ y / n, x.T @ y / n


def _inv_sqrt(c: torch.Tensor, eps: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c + eps * torch.eye(len(c), dtype=c.dtype, device=c.device))
    return vecs @ torch.diag(vals.clamp_min(eps).rsqrt()) @ vecs.T


def vamp_score(
    x: torch.Tensor, y: torch.Tensor, p: int = 2, center: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """VAMP-p score: ‖C_x^{-1/2} C_xy C_y^{-1/2}‖ in the Schatten p-norm, to the power p.

    VAMP-2 = tr(C_x⁻¹ C_xy C_y⁻¹ C_yx); VAMP-1 = the nuclear norm (sum of singular values).
    """
    cx, cy, cxy = covariances(x, y, center)
    koopman = _inv_sqrt(cx, eps) @ cxy @ _inv_sqrt(cy, eps)
    if p == 2:
        return (koopman**2).sum()
    if p == 1:
        return torch.linalg.svdvals(koopman).sum()
    raise ValueError(f"vamp p: expected 1 or 2, got {p}")


def vamp_loss(x, y, p: int = 2, center: bool = False) -> torch.Tensor:
    return -vamp_score(x, y, p, center)


def spectral_contrastive_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/(N(N−1))) Σ_{i≠j} (x_iᵀ y_j)² − (2/N) Σ_i x_iᵀ y_i."""
    n = len(x)
    gram = x @ y.T
    off = (gram**2).sum() - (gram.diagonal() ** 2).sum()
    return off / (n * (n - 1)) - 2 * gram.diagonal().mean()


def dynamical_ae_loss(x, y, encode, decode, operator) -> torch.Tensor:
    """MSE(x, dec enc x) + MSE(enc y, K enc x) + MSE(y, dec K enc x); ``operator`` maps
    latent rows z ↦ z Kᵀ."""
    zx, zy = encode(x), encode(y)
    ahead = operator(zx)
    mse = torch.nn.functional.mse_loss
    return mse(decode(zx), x) + mse(ahead, zy) + mse(decode(ahead), y)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """W minimising ‖x W − y‖² / N + λ ‖W‖²: (xᵀx / N + λ I)⁻¹ xᵀy / N (d_x×d_y)."""
    n = len(x)
    gram = x.T @ x / n + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ y / n)
