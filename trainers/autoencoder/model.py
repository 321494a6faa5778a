"""Autoencoders of the dataset-dynamics study: an MLP with linearly spaced widths, a small
convolutional option."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from trainers.base import TrainerConfig
from trainers.nets import mlp


class AutoencoderModel(TrainerConfig):
    """``mlp``: ``depth // 2`` linear layers from the input size down to ``bottleneck``, widths
    spaced linearly, ReLU between them, mirrored back; ``conv``: two stride-2 conv layers to a
    linear bottleneck and back (``channels``)."""

    kind: Literal["mlp", "conv"] = "mlp"
    bottleneck: int = Field(8, ge=1)
    depth: int = Field(4, ge=2)
    channels: int = Field(16, ge=1)


def widths(inputs: int, bottleneck: int, depth: int) -> list[int]:
    """Encoder widths from ``inputs`` to ``bottleneck`` over ``depth // 2`` layers."""
    layers = depth // 2
    return [round(inputs + (bottleneck - inputs) * i / layers) for i in range(layers + 1)]


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderModel, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        d = math.prod(shape)
        if config.kind == "mlp":
            sizes = widths(d, config.bottleneck, config.depth)
            self.encoder = nn.Sequential(nn.Flatten(), mlp(sizes))
            self.decoder = nn.Sequential(mlp(sizes[::-1]), nn.Unflatten(1, shape))
        else:
            c, h, w = shape
            ch = config.channels
            hh, ww = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
            self.encoder = nn.Sequential(
                nn.Conv2d(c, ch, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(ch, 2 * ch, 3, 2, 1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(2 * ch * hh * ww, config.bottleneck),
            )
            self.decoder = nn.Sequential(
                nn.Linear(config.bottleneck, 2 * ch * hh * ww),
                nn.ReLU(),
                nn.Unflatten(1, (2 * ch, hh, ww)),
                nn.ConvTranspose2d(2 * ch, ch, 3, 2, 1, output_padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(ch, c, 3, 2, 1, output_padding=1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        return out[..., : self.shape[1], : self.shape[2]]

    def linear_layers(self) -> dict[str, torch.Tensor]:
        """The weight of every linear / conv layer, by name (for spectral norms)."""
        return {
            name: m.weight
            for name, m in self.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
        }
