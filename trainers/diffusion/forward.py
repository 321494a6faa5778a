"""Forward processes u_k = T(k) x of the linear family, k = 0..K (T(0) = I).

Each process is one small class in ``FORWARD_PROCESSES``; adding a map is adding a class. All
of them act on batches of images (B×C×H×W) and a level per image (``k``: int64, B).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from dynsweep.errors import TrialFailure
from trainers.base import TrainerConfig


class ForwardConfig(TrainerConfig):
    """Which map and its constants (paper MNIST defaults: K = 100, σ_min 0.5, σ_max 20)."""

    name: Literal[
        "heat",
        "identity",
        "fixed_random",
        "random_product",
        "constant_velocity",
        "constant_deceleration",
    ] = "heat"
    K: int = Field(100, ge=1)
    sigma_min: float = Field(0.5, gt=0)  # heat: blur width at k = 1 (pixels)
    sigma_max: float = Field(20.0, gt=0)  # heat: blur width at k = K
    seed: int = 0  # random maps: the seed of R_1..R_K
    max_condition: float = Field(1e6, gt=1)  # random_product: refuse worse-conditioned T(K)


class ForwardProcess:
    """T(k) for k = 0..K on images of one shape."""

    name: ClassVar[str]

    def __init__(self, config: ForwardConfig, shape: tuple[int, int, int]) -> None:
        self.config, self.shape, self.K = config, shape, config.K

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device) -> ForwardProcess:
        return self


def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n): DCT(v) = D v, inverse D^T."""
    i = torch.arange(n, dtype=dtype)
    d = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


class Heat(ForwardProcess):
    """Blur by the heat equation: u_k = IDCT(DCT(x) · exp(−λ σ_k² / 2)) (Rissanen et al. 2023)."""

    name = "heat"

    def __init__(self, config: ForwardConfig, shape: tuple[int, int, int]) -> None:
        super().__init__(config, shape)
        _, h, w = shape
        self.dh, self.dw = dct_matrix(h).float(), dct_matrix(w).float()
        n, m = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
        self.freq = ((math.pi * n[:, None] / h) ** 2 + (math.pi * m[None, :] / w) ** 2).float()
        sig = torch.exp(
            torch.linspace(math.log(config.sigma_min), math.log(config.sigma_max), config.K)
        )
        self.sigmas = torch.cat([torch.zeros(1), sig])  # σ_0 = 0: u_0 = x

    def to(self, device: torch.device) -> Heat:
        self.dh, self.dw = self.dh.to(device), self.dw.to(device)
        self.freq, self.sigmas = self.freq.to(device), self.sigmas.to(device)
        return self

    def blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Heat blur of width ``sigma`` (B) applied to ``x`` (B×C×H×W)."""
        coeffs = self.dh @ x @ self.dw.T
        damp = torch.exp(-self.freq * sigma.reshape(-1, 1, 1, 1) ** 2 / 2)
        return self.dh.T @ (coeffs * damp) @ self.dw

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.blur(x, self.sigmas[k])


class Identity(ForwardProcess):
    name = "identity"

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return x.clone()


class _Scaled(ForwardProcess):
    """T(t) = s(t/K) I."""

    def scale(self, frac: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        frac = k.to(x.dtype) / self.K
        return self.scale(frac).reshape(-1, 1, 1, 1) * x


class ConstantVelocity(_Scaled):
    """T(t) = (1 − t/K) I: every pixel moves to 0 at a constant speed.

    The linear-models-diffusion fork's README formula 4 ("constant velocity as varying
    brightness", u_t = u_0 − (b t/K) u_0) with b = 1, not its code (``ramp``: a shift of
    +0.001 (t − 1)/K on the diagonal pixels; ``darkening``: b = 0.7, clamped to [0, 1]).
    """

    name = "constant_velocity"

    def scale(self, frac: torch.Tensor) -> torch.Tensor:
        return 1 - frac


class ConstantDeceleration(_Scaled):
    """T(t) = (1 − t/K)² I: a particle decelerating uniformly to rest at the origin at t = K.

    The fork's README formula 5, u_t = u_0 − (b t/K) u_0 + (b t²/(2K²)) u_0, with b = 2. That
    README is self-inconsistent: its formula comes to rest at (1 − b/2) u_0, not the
    (1 − b)/2 u_0 it states; b = 2 is the one choice that comes to rest at 0, as
    ``constant_velocity`` ends at 0. The fork's code (``decelerating_ramp``) is a shift of the
    diagonal pixels whose t² coefficient is 1/K of the README's, so never comes to rest.
    """

    name = "constant_deceleration"

    def scale(self, frac: torch.Tensor) -> torch.Tensor:
        return (1 - frac) ** 2


class _Matrices(ForwardProcess):
    """T(k) as explicit D×D matrices (D = C·H·W), T(0) = I."""

    def __init__(self, config: ForwardConfig, shape: tuple[int, int, int]) -> None:
        super().__init__(config, shape)
        d = math.prod(shape)
        gen = torch.Generator().manual_seed(config.seed)
        # R_k = G_k / √D: entries of variance 1/D keep ‖R_k v‖ ≈ ‖v‖ for a typical v.
        randoms = torch.randn(config.K, d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        self.maps = torch.cat([torch.eye(d, dtype=torch.float64)[None], self.build(randoms)])
        self.check(self.maps)
        self.maps = self.maps.float()

    def build(self, randoms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check(self, maps: torch.Tensor) -> None:
        return None

    def to(self, device: torch.device) -> _Matrices:
        self.maps = self.maps.to(device)
        return self

    def __call__(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1, 1)
        return (self.maps[k] @ flat).reshape(x.shape)


class FixedRandom(_Matrices):
    """T(k) = R_k: one seeded random matrix per level."""

    name = "fixed_random"

    def build(self, randoms: torch.Tensor) -> torch.Tensor:
        return randoms


class RandomProduct(_Matrices):
    """T(k) = R_k ⋯ R_1. Products of random matrices grow ill-conditioned exponentially in k,
    so the trial fails at setup, with the condition number, once T(K) is beyond use."""

    name = "random_product"

    def build(self, randoms: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(_cumulative_products(randoms)))

    def check(self, maps: torch.Tensor) -> None:
        for k, t in enumerate(maps):
            finite = bool(torch.isfinite(t).all())
            cond = float(torch.linalg.cond(t)) if finite else math.inf
            if not finite or cond > self.config.max_condition:
                raise TrialFailure(
                    f"forward process random_product is numerically unstable: T({k}) = "
                    f"R_{k}⋯R_1 has condition number {cond:.3g} > max_condition "
                    f"{self.config.max_condition:.3g} (K = {self.K}); use fewer levels (K), "
                    f"or fixed_random"
                )


def _cumulative_products(randoms: torch.Tensor):
    acc = torch.eye(randoms.shape[1], dtype=randoms.dtype)
    for r in randoms:
        acc = r @ acc
        yield acc


FORWARD_PROCESSES: dict[str, type[ForwardProcess]] = {
    cls.name: cls
    for cls in (
        Heat,
        Identity,
        FixedRandom,
        RandomProduct,
        ConstantVelocity,
        ConstantDeceleration,
    )
}


def build_forward(config: ForwardConfig, shape: tuple[int, int, int]) -> ForwardProcess:
    return FORWARD_PROCESSES[config.name](config, shape)
