"""Dataset spectra: eigenimages, their centred |FFT2| and radial p-norm ring integrals.

The field that the autoencoder study follows is ``u(r, j)``: how much of eigenimage ``j``'s
(normalised) Fourier magnitude lies on the p-norm ring of radius ``r`` around the zero
frequency. Computed once for a dataset (cached by the trainer) and, during training, for the
autoencoder's reconstructions; #7's PDE-FIND reads it as a field over (r, j).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from trainers.base import TrainerConfig


class SpectraConfig(TrainerConfig):
    """Ring geometry: rings of half-width ``half_width`` at radii 0, m, 2m, … (m =
    ``radius_mult``) in the p-norm ``p`` (2: circles, 1: diamonds, inf: squares)."""

    eigenimages: int = Field(32, ge=1)  # how many leading eigenimages to follow
    p: float = Field(2.0, ge=1)
    half_width: float = Field(0.5, gt=0)
    radius_mult: float = Field(1.0, gt=0)
    center: bool = False  # subtract the mean image before the SVD


def eigenimages(x: torch.Tensor, k: int, center: bool = False) -> torch.Tensor:
    """The ``k`` leading right-singular vectors of the flattened images, as k×H×W (C = 1)."""
    flat = x.reshape(len(x), -1).double()
    if center:
        flat = flat - flat.mean(0)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    return vh[:k].reshape(-1, *x.shape[-2:]).to(x.dtype)


def centred_fft(images: torch.Tensor) -> torch.Tensor:
    """|FFT2| with the zero frequency in the centre, each image normalised to sum 1."""
    mag = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1)).abs()
    return mag / mag.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def ring_masks(shape: tuple[int, int], config: SpectraConfig) -> torch.Tensor:
    """R×H×W 0/1 masks of the p-norm rings around the centre of an fftshifted spectrum."""
    h, w = shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) - h // 2,
        torch.arange(w, dtype=torch.float64) - w // 2,
        indexing="ij",
    )
    if math.isinf(config.p):
        radius = torch.maximum(yy.abs(), xx.abs())
    else:
        radius = (yy.abs() ** config.p + xx.abs() ** config.p) ** (1 / config.p)
    count = int(math.floor(float(radius.max()) / config.radius_mult)) + 1
    radii = torch.arange(count, dtype=torch.float64) * config.radius_mult
    return ((radius[None] - radii[:, None, None]).abs() <= config.half_width).float()


def ring_integrals(spectra: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """∫ |F| over each ring: k×H×W spectra, R×H×W masks → the field u(j, r), k×R."""
    return torch.einsum("khw,rhw->kr", spectra.float(), masks.to(spectra.device).float())


def field(x: torch.Tensor, config: SpectraConfig, masks: torch.Tensor) -> torch.Tensor:
    """u(j, r) of a set of images (N×1×H×W): eigenimages → centred |FFT| → rings."""
    eig = eigenimages(x, min(config.eigenimages, len(x), x[0].numel()), config.center)
    return ring_integrals(centred_fft(eig), masks)


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
