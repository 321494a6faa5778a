"""Classifier networks: an MLP of configurable widths and a small CNN."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from trainers.base import TrainerConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class ModelConfig(TrainerConfig):
    """``mlp``: flatten → hidden ``widths`` → classes; ``cnn``: conv ``channels`` → linear.

    ``final_activation``: ``identity`` (the default: the model outputs logits, and the loss is
    cross-entropy of the logits) or ``softmax`` — the output is softmax(logits), and the
    trainer's cross-entropy then applies a second softmax to it, as jimzers/edm_nn's ``MLPNet``
    does (``final_activation: softmax`` with ``F.cross_entropy``). That squashes the gradients
    (its loss cannot fall below ~1.46 for 10 classes) and changes the weight dynamics; it is
    there to reproduce that study, not as a better choice.
    """

    kind: Literal["mlp", "cnn"] = "mlp"
    widths: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)
    activation: Literal["relu", "tanh", "gelu", "elu"] = "relu"
    channels: tuple[PositiveInt, ...] = Field((16, 32), min_length=1)
    final_activation: Literal["identity", "softmax"] = "identity"


class Classifier(nn.Module):
    """A feed-forward classifier whose hidden layers can be read out for probing."""

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], classes: int):
        super().__init__()
        c, h, w = image_shape
        act = ACTIVATIONS[cfg.activation]
        layers: list[nn.Module] = []
        if cfg.kind == "mlp":
            layers.append(nn.Flatten())
            width = c * h * w
            for out in cfg.widths:
                layers.append(nn.Sequential(nn.Linear(width, out), act()))
                width = out
            layers.append(nn.Linear(width, classes))
        else:
            ch = c
            for out in cfg.channels:
                layers.append(
                    nn.Sequential(nn.Conv2d(ch, out, 3, padding=1), act(), nn.MaxPool2d(2))
                )
                ch, h, w = out, max(1, h // 2), max(1, w // 2)
            layers += [nn.Flatten(), nn.Linear(ch * h * w, classes)]
        self.layers = nn.ModuleList(layers)
        self.softmax_output = cfg.final_activation == "softmax"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return torch.softmax(x, dim=-1) if self.softmax_output else x

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every hidden block (not the flatten, not the logits), batch-first."""
        outs = []
        for layer in self.layers[:-1]:
            x = layer(x)
            if not isinstance(layer, nn.Flatten):
                outs.append(x)
        return outs
