"""Networks and the estimator of kooplearn's ordered-MNIST example (``examples/
ordered_mnist_torch.ipynb``), re-implemented for the ``koopman`` trainer's ``architecture: cnn``,
``oracle: kooplearn`` and ``estimator: kooplearn`` options.

- :class:`CNNEncoder`: two conv blocks (5×5, 16 then 32 channels, ReLU, 2×2 max-pool) and a
  linear layer to ``out`` values; the example's oracle (``out`` = classes) and its encoders
  (``out`` = latent dimension). :class:`CNNDecoder`: linear to 32×7×7, then twice
  (×2 upsampling, ReLU, 5×5 transposed conv), the dynamical autoencoder's decoder.
- :class:`FeatureMap`: the encoder-only models' network: CNN, optional L2 normalisation of its
  output, and a bias-free linear head applied to the *lagged* (t + 1) features in the loss only.
- :func:`kooplearn_ridge_basis`: kooplearn's ``Ridge`` (reduced rank, ``eigen_solver='dense'``)
  fit: U with U Uᵀ C_XY the operator, on uncentred covariances.
- :func:`train_oracle`: the example's oracle training (AdamW, lr 8e-4, batch 64, 20 epochs,
  seed 42, on the training part of the ordered sequence).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn


class CNNEncoder(nn.Module):
    def __init__(self, out: int, channels: int = 1, side: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 16, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(32 * (side // 4) ** 2, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.out(self.conv2(self.conv1(x)).flatten(1))


class CNNDecoder(nn.Module):
    def __init__(self, latent: int, side: int = 28) -> None:
        super().__init__()
        self.side = side // 4
        self.fc = nn.Linear(latent, 32 * self.side**2)
        up = nn.Upsample(scale_factor=2)
        self.conv1 = nn.Sequential(up, nn.ReLU(), nn.ConvTranspose2d(32, 16, 5, 1, 2))
        self.conv2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.ReLU())
        self.conv2.append(nn.ConvTranspose2d(16, 1, 5, 1, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).reshape(-1, 32, self.side, self.side)
        return self.conv2(self.conv1(x))  # N×1×H×W


class FeatureMap(nn.Module):
    """φ(x) = normalise(backbone(x)); ``lagged=True`` applies the linear head on top (used for
    the t + 1 side of the loss; the fitted operator uses φ without it)."""

    def __init__(self, backbone: nn.Module, dim: int, normalize: bool, head: bool) -> None:
        super().__init__()
        self.backbone, self.normalize = backbone, normalize
        self.head = nn.Linear(dim, dim, bias=False) if head else None

    def forward(self, x: torch.Tensor, lagged: bool = False) -> torch.Tensor:
        z = self.backbone(x)
        if self.normalize:
            z = nn.functional.normalize(z, dim=-1)
        if lagged and self.head is not None:
            z = self.head(z)
        return z


def kooplearn_ridge_basis(x: np.ndarray, y: np.ndarray, alpha: float, rank: int) -> np.ndarray:
    """U (d×r') of kooplearn's reduced-rank ``Ridge``: C = uncentred covariances over N pairs,
    (C_XY C_YX) u = σ (C_X + αI) u by a dense generalised eigensolver, the ``rank`` largest σ
    kept unless below 10·d·machine-ε (kooplearn's ``stable_topk``: so r' may be < rank), each u
    normalised so that uᵀ (C_X + αI) u = 1. The operator is U Uᵀ C_XY; an observable g is
    predicted one step ahead as φ(x) U Uᵀ Φ_Xᵀ g(Y) / N."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, d = x.shape
    cx = x.T @ x / n + alpha * np.eye(d)
    cxy = x.T @ y / n
    values, vectors = scipy.linalg.eigh(cxy @ cxy.T, cx)
    order = np.argsort(values)[::-1][:rank]
    order = order[values[order] > 10.0 * d * np.finfo(np.float64).eps]
    u = vectors[:, order]
    norms = np.sqrt(np.maximum(np.sum(u * (cx @ u), axis=0), 0.0))
    return u / norms


def train_oracle(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 8e-4,
    seed: int = 42,
) -> CNNEncoder:
    """The example's oracle: a :class:`CNNEncoder` with ``classes`` outputs, AdamW (torch's
    default weight decay 0.01) on cross-entropy, shuffled minibatches; returned in eval mode."""
    torch.manual_seed(seed)
    model = CNNEncoder(classes, images.shape[1], images.shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
