"""An ADM-style U-Net (Dhariwal & Nichol 2021), as used by the inverse-heat-dissipation paper.

Time-step embedding, residual blocks with GroupNorm and the embedding added in, self-attention
at chosen levels, strided-convolution downsampling, nearest-neighbour upsampling followed by a
3×3 convolution (the original's ``conv_resample=True``; ``upsample_conv: false`` drops it, the
layout of checkpoints exported before the option existed), and zero-initialised output
convolutions, so the untrained network predicts a zero residual (prediction = input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainers.base import TrainerConfig


class UNetConfig(TrainerConfig):
    """Paper MNIST size: channels 128, mult (1, 2, 2), 4 res blocks, attention at level 2."""

    channels: int = Field(128, ge=4)
    mult: tuple[int, ...] = Field((1, 2, 2), min_length=1)
    num_res_blocks: int = Field(4, ge=1)
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = Field(0.1, ge=0, lt=1)
    upsample_conv: bool = True  # a 3×3 conv after each upsampling, as the original's U-Net


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, ch), ch)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(k: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=k.device) / half)
    args = k.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], 1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(
            _norm(cout), nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the next skip's size, then (``conv``) a 3×3 conv."""

    def __init__(self, ch: int, conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1) if conv else nn.Identity()

    def forward(self, h: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.conv(F.interpolate(h, size=size, mode="nearest"))


class UNet(nn.Module):
    """f(u, k): the residual that moves u_k towards u_{k−1}; same shape as ``u``."""

    def __init__(self, config: UNetConfig, in_channels: int) -> None:
        super().__init__()
        ch, emb = config.channels, config.channels * 4
        self.config = config
        self.embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, cur = [ch], ch
        levels = len(config.mult)
        for level, mult in enumerate(config.mult):
            for _ in range(config.num_res_blocks):
                self.down.append(self._block(cur, ch * mult, emb, level, config))
                cur = ch * mult
                skips.append(cur)
            if level < levels - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.middle = nn.ModuleList(
            [
                ResBlock(cur, cur, emb, config.dropout),
                Attention(cur),
                ResBlock(cur, cur, emb, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.mult))):
            for i in range(config.num_res_blocks + 1):
                self.up.append(self._block(cur + skips.pop(), ch * mult, emb, level, config))
                cur = ch * mult
                if level > 0 and i == config.num_res_blocks:
                    self.up.append(Upsample(cur, config.upsample_conv))
        self.out = nn.Sequential(
            _norm(cur), nn.SiLU(), _zero(nn.Conv2d(cur, in_channels, 3, padding=1))
        )

    @staticmethod
    def _block(cin: int, cout: int, emb: int, level: int, config: UNetConfig) -> nn.ModuleList:
        layers = [ResBlock(cin, cout, emb, config.dropout)]
        if level in config.attention_levels:
            layers.append(Attention(cout))
        return nn.ModuleList(layers)

    def _run(self, layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.ModuleList):
            for sub in layer:
                h = sub(h, emb) if isinstance(sub, ResBlock) else sub(h)
            return h
        return layer(h, emb) if isinstance(layer, ResBlock) else layer(h)

    def forward(self, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        emb = self.embed(timestep_embedding(k, self.config.channels))
        h = self.stem(u)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        for layer in self.middle:
            h = self._run(layer, h, emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, hs[-1].shape[-2:])
                continue
            h = self._run(layer, torch.cat([h, hs.pop()], 1), emb)
        return self.out(h)
