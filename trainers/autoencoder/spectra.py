"""Dataset spectra: eigenimages, their centred |FFT2| and radial p-norm ring integrals.

The field that the autoencoder study follows is ``u(j, r)``: the mean Fourier magnitude of
eigenimage ``j`` on the p-norm ring of radius ``r`` around the centre of the spectrum, as
Zhu et al.'s ``calculate_integrals`` (``src/helpers.py``) computes it. Computed once for a
dataset (cached by the trainer) and, during training, for the autoencoder's reconstructions;
#7's PDE-FIND reads it as a field over (r, j).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from trainers.base import TrainerConfig


class SpectraConfig(TrainerConfig):
    """Rings at radii 1, 2, …, ⌊``radius_mult`` · H / 2⌋ in the p-norm ``p`` (2: circles, 1:
    diamonds, < 1: concave diamonds, inf: squares); a ring holds the frequencies whose distance
    from the centre lies within ``half_width`` of its radius (the original's ``smoothing``).
    Rings that hold no frequency are left out, as in the original."""

    eigenimages: int = Field(32, ge=1)  # how many leading eigenimages to follow
    p: float = Field(2.0, gt=0)
    half_width: float = Field(0.5, gt=0)
    radius_mult: float = Field(1.0, gt=0)
    center: bool = False  # subtract the mean image before the SVD


def eigenimages(x: torch.Tensor, k: int, center: bool = False) -> torch.Tensor:
    """The ``k`` leading right-singular vectors of the flattened images, as k×H×W (C = 1)."""
    return singular(x, k, center)[1]


def singular(x: torch.Tensor, k: int, center: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(all singular values, float64; the ``k`` leading eigenimages, k×H×W in x's dtype) of
    the flattened images."""
    flat = x.reshape(len(x), -1).double()
    if center:
        flat = flat - flat.mean(0)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    return s, vh[:k].reshape(-1, *x.shape[-2:]).to(x.dtype)


def numerical_rank(s: torch.Tensor, tol: float) -> int:
    """How many singular values exceed ``tol`` × the largest: the first eigen-index beyond it
    is an arbitrary vector of the null space (for an MLP autoencoder's reconstructions, at
    most bottleneck + 1: a bottleneck-dimensional affine image)."""
    return int((s > tol * s[0]).sum()) if len(s) and s[0] > 0 else 0


def centred_fft(images: torch.Tensor) -> torch.Tensor:
    """|FFT2| / H with the zero frequency in the centre (the original's ``fft2d`` with
    ``centering`` and ``normalize``, all frequencies)."""
    f = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(images, dim=(-2, -1))), dim=(-2, -1))
    return f.abs() / images.shape[-2]


def _rings(shape: tuple[int, int], config: SpectraConfig) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = shape
    dy = (torch.arange(h, dtype=torch.float64) - (h / 2 - 0.5)).abs()[:, None].expand(h, w)
    dx = (torch.arange(w, dtype=torch.float64) - (w / 2 - 0.5)).abs()[None, :].expand(h, w)
    p = config.p
    if math.isinf(p):
        dist = torch.maximum(dy, dx)
    elif p == 2:
        dist = (dy * dy + dx * dx).sqrt()
    elif p == 1:
        dist = dy + dx
    else:
        dist = (dy**p + dx**p) ** (1 / p)
    radii = torch.arange(1, int(config.radius_mult * h // 2) + 1, dtype=torch.float64)
    s = config.half_width
    masks = (dist[None] >= radii[:, None, None] - s) & (dist[None] <= radii[:, None, None] + s)
    kept = masks.any(-1).any(-1)
    return radii[kept], masks[kept].double()


def ring_masks(shape: tuple[int, int], config: SpectraConfig) -> torch.Tensor:
    """R×H×W 0/1 masks of the non-empty p-norm rings around the centre of the pixel grid,
    ((H − 1) / 2, (W − 1) / 2), as the original's ``create_p_norm_mask``."""
    return _rings(shape, config)[1]


def ring_radii(shape: tuple[int, int], config: SpectraConfig) -> torch.Tensor:
    """The radius of each of :func:`ring_masks`' rings (the columns r of u(j, r))."""
    return _rings(shape, config)[0]


def ring_integrals(spectra: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The mean of |F| over each ring (sum over the mask / its size): k×H×W spectra, R×H×W
    masks → the field u(j, r), k×R, in the spectra's dtype."""
    masks = masks.to(spectra.device, spectra.dtype)
    return torch.einsum("khw,rhw->kr", spectra, masks) / masks.sum((-2, -1))


def field(x: torch.Tensor, config: SpectraConfig, masks: torch.Tensor) -> torch.Tensor:
    """u(j, r) of a set of images (N×1×H×W): eigenimages → centred |FFT| → rings."""
    eig = eigenimages(x, min(config.eigenimages, len(x), x[0].numel()), config.center)
    return ring_integrals(centred_fft(eig), masks)


def fft_error(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Per eigenimage, the squared difference of two k×H×W centred |FFT2| / H, summed over
    the frequencies: the original's ``generate_fft_mse_pdf`` MSE (its mean) times H·W. A unit
    eigenimage has Σ (|F| / H)² = 1 (Parseval), so the error is relative to its energy."""
    return ((ours - theirs) ** 2).sum((-2, -1))


def transition_frame(error: torch.Tensor, threshold: float) -> int:
    """The first eigen-index whose spectral error exceeds ``threshold`` (len if none)."""
    above = (error > threshold).nonzero()
    return int(above[0]) if len(above) else len(error)


def spectral_norm(weight: torch.Tensor, vector: torch.Tensor, iterations: int = 3):
    """Largest singular value of a 2-D ``weight`` by power iteration from ``vector`` (updated
    in place, so successive calls converge further): returns (σ, vector)."""
    w = weight.detach().reshape(len(weight), -1)
    v = vector
    for _ in range(iterations):
        u = torch.nn.functional.normalize(w @ v, dim=0)
        v = torch.nn.functional.normalize(w.T @ u, dim=0)
    return float(u @ (w @ v)), v
