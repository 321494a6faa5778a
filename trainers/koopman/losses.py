"""Losses and estimators of evolution-operator ("Koopman") learning, as small functions.

Conventions: ``x`` holds the embeddings of states at time t and ``y`` those at t + 1, both
N×d (rows are samples). The losses follow kooplearn's (``kooplearn.torch.nn``) formulas: the
VAMP score, the spectral contrastive loss and the dynamical autoencoder loss with its three
weights; ``tests/trainers/test_koopman_fidelity.py`` checks them against a re-implementation.
"""

from __future__ import annotations

import torch


def covariances(x: torch.Tensor, y: torch.Tensor, center: bool = False):
    """(C_x, C_y, C_xy), each normalised by N."""
    if center:
        x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    return x.T @ x / n, y.T @ y / n, x.T @ y / n


def _pinv_sqrt(c: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of the square root of a PSD matrix, eigenvalues below kooplearn's
    ``sqrtmh`` threshold (λ_max · d · machine ε) dropped."""
    vals, vecs = torch.linalg.eigh(c)
    keep = vals > vals.max() * len(c) * torch.finfo(c.dtype).eps
    inv = torch.where(keep, vals.clamp_min(torch.finfo(c.dtype).tiny).rsqrt(), 0.0)
    return vecs @ torch.diag(inv) @ vecs.T


def _inv_sqrt(c: torch.Tensor, eps: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c + eps * torch.eye(len(c), dtype=c.dtype, device=c.device))
    return vecs @ torch.diag(vals.clamp_min(eps).rsqrt()) @ vecs.T


def vamp_score(
    x: torch.Tensor, y: torch.Tensor, p: int = 2, center: bool = False, eps: float = 0.0
) -> torch.Tensor:
    """VAMP-p score: ‖C_x^{-1/2} C_xy C_y^{-1/2}‖ in the Schatten p-norm, to the power p.

    VAMP-2 = tr(C_x⁻¹ C_xy C_y⁻¹ C_yx); VAMP-1 = the nuclear norm (sum of singular values).
    ``eps = 0`` is kooplearn's computation (VAMP-2 by least squares, VAMP-1 by pseudo-inverse
    square roots); ``eps > 0`` adds ``eps·I`` to C_x and C_y before inverting (a Tikhonov
    ridge: it lowers the score slightly and keeps its gradient bounded when a feature
    collapses). Centred, the constant function is not counted (kooplearn); deeptime's
    convention adds 1 for it, which is what uncentred covariances of features that include
    a constant give.
    """
    cx, cy, cxy = covariances(x, y, center)
    if eps > 0:
        koopman = _inv_sqrt(cx, eps) @ cxy @ _inv_sqrt(cy, eps)
    elif p == 2:
        m_x = torch.linalg.lstsq(cx, cxy).solution
        m_y = torch.linalg.lstsq(cy, cxy.T).solution
        return torch.trace(m_x @ m_y)
    else:
        koopman = _pinv_sqrt(cx) @ cxy @ _pinv_sqrt(cy)
    if p == 2:
        return (koopman**2).sum()
    if p == 1:
        return torch.linalg.svdvals(koopman).sum()
    raise ValueError(f"vamp p: expected 1 or 2, got {p}")


def vamp_loss(x, y, p: int = 2, center: bool = False, eps: float = 0.0) -> torch.Tensor:
    return -vamp_score(x, y, p, center, eps)


def spectral_contrastive_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/(N(N−1))) Σ_{i≠j} (x_iᵀ y_j)² − (2/N) Σ_i x_iᵀ y_i."""
    n = len(x)
    gram = x @ y.T
    off = (gram**2).sum() - (gram.diagonal() ** 2).sum()
    return off / (n * (n - 1)) - 2 * gram.diagonal().mean()


def dynamical_ae_loss(
    x, y, encode, decode, operator, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """α_rec MSE(x, dec enc x) + α_lin MSE(enc y, K enc x) + α_pred MSE(y, dec K enc x);
    ``operator`` maps latent rows z ↦ z Kᵀ; ``weights`` = (α_rec, α_lin, α_pred)."""
    zx, zy = encode(x), encode(y)
    ahead = operator(zx)
    mse = torch.nn.functional.mse_loss
    terms = (mse(decode(zx), x), mse(ahead, zy), mse(decode(ahead), y))
    return sum(w * t for w, t in zip(weights, terms))


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """W minimising ‖x W − y‖² / N + λ ‖W‖²: (xᵀx / N + λ I)⁻¹ xᵀy / N (d_x×d_y)."""
    n = len(x)
    gram = x.T @ x / n + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ y / n)


def reduced_rank_ridge(x: torch.Tensor, y: torch.Tensor, lam: float, rank: int) -> torch.Tensor:
    """The rank-``rank`` W minimising ‖x W − y‖² / N + λ ‖W‖² (kooplearn's ``Ridge`` with
    ``reduced_rank=True``): W = U Uᵀ C_xy, U the leading generalised eigenvectors of
    (C_xy C_yx, C_x + λI), normalised so that Uᵀ (C_x + λI) U = I."""
    n = len(x)
    cx = x.T @ x / n + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    cxy = x.T @ y / n
    chol = torch.linalg.cholesky(cx)
    # C_x = L Lᵀ: the symmetric problem L⁻¹ C_xy C_yx L⁻ᵀ v = σ v, then U = L⁻ᵀ v.
    a = torch.linalg.solve_triangular(chol, cxy, upper=False)
    vals, vecs = torch.linalg.eigh(a @ a.T)
    top = vecs[:, vals.argsort(descending=True)[:rank]]
    u = torch.linalg.solve_triangular(chol.T, top, upper=True)
    return u @ u.T @ cxy
