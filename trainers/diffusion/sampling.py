"""Sampling from a trained reverse process: u_K from the forward process of data (+ δ noise),
then for k = K..1: μ = u + f(u, k), u = μ + δ ε, except at k = 1, which returns the mean μ
(as the original's sampler does; ``final_noise=True`` adds the last δ ε too).

Modes (``n`` samples each):
- ``random``: its own data image and its own noise per sample;
- ``same_init``: one u_K shared by all samples, different noise;
- ``share_noise``: one noise sequence shared by all samples, different u_K;
- ``interpolate``: two u_K mixed linearly over ``n`` points, their noise sequences mixed on the
  circle (cos/sin weights keep the noise variance at δ²).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from trainers.diffusion.forward import ForwardProcess

Mode = Literal["random", "same_init", "share_noise", "interpolate"]
MODES: tuple[str, ...] = ("random", "same_init", "share_noise", "interpolate")
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Samples:
    images: torch.Tensor  # n×C×H×W, u_0
    start: torch.Tensor  # n×C×H×W, u_K
    noise: torch.Tensor  # K×n×C×H×W, the ε of each step (k = K..1; k = 1's only if final_noise)


def _pair_mix(a: torch.Tensor, b: torch.Tensor, n: int, circle: bool) -> torch.Tensor:
    lam = torch.linspace(0, 1, n, device=a.device).reshape(-1, *([1] * a.dim()))
    if circle:
        return torch.cos(lam * math.pi / 2) * a + torch.sin(lam * math.pi / 2) * b
    return (1 - lam) * a + lam * b


@torch.no_grad()
def sample(
    model: Model,
    forward: ForwardProcess,
    data: torch.Tensor,
    n: int,
    delta: float,
    mode: Mode = "random",
    generator: torch.Generator | None = None,
    final_noise: bool = False,
) -> Samples:
    """Draw ``n`` samples; ``data`` are images whose forward process starts the chains.

    The last step returns its mean μ(u_1) unless ``final_noise`` (this module's behaviour
    before it matched the original)."""
    if mode not in MODES:
        raise ValueError(f"sampling mode: expected one of {MODES}, got {mode!r}")
    K, shape, device = forward.K, data.shape[1:], data.device

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, *shape, generator=generator, device="cpu").to(device)

    def pick(m: int) -> torch.Tensor:
        idx = torch.randint(len(data), (m,), generator=generator)
        return data[idx.to(device)]

    level = torch.full((1,), K, dtype=torch.long, device=device)
    if mode == "random" or mode == "share_noise":
        x = pick(n)
        start = forward(x, level.expand(n)) + delta * randn(n)
    elif mode == "same_init":
        x = pick(1)
        start = (forward(x, level) + delta * randn(1)).expand(n, *shape).clone()
    else:
        x = pick(2)
        ends = forward(x, level.expand(2)) + delta * randn(2)
        start = _pair_mix(ends[0], ends[1], n, circle=False)

    if mode == "share_noise":
        noise = randn(K, 1).expand(K, n, *shape).clone()
    elif mode == "interpolate":
        pair = randn(K, 2)
        noise = torch.stack([_pair_mix(e[0], e[1], n, circle=True) for e in pair])
    else:
        noise = randn(K, n)

    u = start
    for i, k in enumerate(range(K, 0, -1)):
        ks = torch.full((n,), k, dtype=torch.long, device=device)
        u = u + model(u, ks)
        if k > 1 or final_noise:
            u = u + delta * noise[i]
    return Samples(images=u, start=start, noise=noise)


def image_grid(images: torch.Tensor, columns: int = 8):
    """A uint8 H×W (grey) or H×W×3 array of ``images`` (n×C×h×w in [0, 1]) in a grid."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + 1) + 1, columns * (w + 1) + 1)
    for i, img in enumerate(images.detach().float().cpu().clamp(0, 1)):
        r, col = divmod(i, columns)
        grid[
            :, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w
        ] = img
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array
