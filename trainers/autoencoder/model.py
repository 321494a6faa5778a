"""Autoencoders of the dataset-dynamics study: Zhu et al.'s MLP (``src/models.py``, ``AE``)
and a small convolutional option."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from trainers.base import TrainerConfig
from trainers.nets import mlp


class AutoencoderModel(TrainerConfig):
    """``mlp``: ``depth`` layer sizes from the input size down to ``bottleneck`` and back
    (:func:`layer_sizes`), so ``depth − 1`` linear layers with a ReLU after each but the last,
    the bottleneck's included; ``conv``: two stride-2 conv layers to a linear bottleneck and
    back (``channels``)."""

    kind: Literal["mlp", "conv"] = "mlp"
    bottleneck: int = Field(8, ge=1)
    depth: int = Field(4, ge=2)
    channels: int = Field(16, ge=1)


def layer_sizes(inputs: int, bottleneck: int, depth: int) -> list[int]:
    """The original's rule, ``depth`` sizes: 2 → [d, d]; even → ``linspace(d, b, depth // 2)``
    then ``linspace(b, d, depth // 2)`` (so the bottleneck width appears twice: 4 → [d, b, b,
    d]); odd → ``linspace(d, b, depth // 2 + 1)`` then ``linspace(b, d, depth // 2 + 1)[1:]``
    (3 → [d, b, d], 5 → [d, m, b, m, d]); numpy's linspace cast to int (truncated)."""
    if depth == 2:
        return [inputs, inputs]
    half = depth // 2 + depth % 2
    down = np.linspace(inputs, bottleneck, half, dtype=int).tolist()
    up = np.linspace(bottleneck, inputs, half, dtype=int).tolist()
    return down + (up if depth % 2 == 0 else up[1:])


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderModel, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        d = math.prod(shape)
        if config.kind == "mlp":
            sizes = layer_sizes(d, config.bottleneck, config.depth)
            self.net = nn.Sequential(nn.Flatten(), mlp(sizes), nn.Unflatten(1, shape))
            return
        c, h, w = shape
        ch = config.channels
        hh, ww = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
        self.net = nn.Sequential(
            nn.Conv2d(c, ch, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * ch * hh * ww, config.bottleneck),
            nn.Linear(config.bottleneck, 2 * ch * hh * ww),
            nn.ReLU(),
            nn.Unflatten(1, (2 * ch, hh, ww)),
            nn.ConvTranspose2d(2 * ch, ch, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(ch, c, 3, 2, 1, output_padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[..., : self.shape[1], : self.shape[2]]

    def linear_layers(self) -> dict[str, torch.Tensor]:
        """The weight of every linear / conv layer, by name (for spectral norms)."""
        return {
            name: m.weight
            for name, m in self.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
        }
