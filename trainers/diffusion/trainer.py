"""The ``diffusion`` trainer: inverse heat dissipation and the linear forward-process family.

Per step: draw a level k per image (``train_levels``: ``below_K``, the default, k ∈ {1..K−1}
as the original's ``randint(1, K)``; ``all``: k ∈ {1..K}), ũ = u_k + σ ε, predict u_{k−1} as
ũ + f(ũ, k); loss = squared error summed over pixels, batch mean (``train/loss``), Adam
with linear warmup, gradient-norm clipping and an EMA copy of the weights (decay
min(ema, (1 + n)/(10 + n)) at update n, the original's warm-up; ``optimizer.ema_warmup:
false`` keeps it at ``ema``). Per evaluation: ``val/loss`` of the EMA model on a fixed
validation batch with fixed levels (drawn from the training levels) and noise, and
(``elbo_images > 0``) the negative ELBO in bits per dimension (``val/elbo_bpd``; its prior
term L_K by ``elbo_prior``, see :mod:`trainers.diffusion.elbo`). At the end: one sample grid
per sampling mode.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from trainers.base import Context, Trainer, TrainerConfig, parameter_columns
from trainers.data import DATASETS, Batches, image_shape, load_dataset
from trainers.diffusion.elbo import PriorTerm, elbo
from trainers.diffusion.forward import ForwardConfig, build_forward
from trainers.diffusion.sampling import Mode, image_grid, sample
from trainers.diffusion.unet import UNet, UNetConfig
from trainers.distributed import Parallel, build_engine


class DiffusionOptimizer(TrainerConfig):
    lr: float = Field(2e-4, gt=0)
    warmup: int = Field(5000, ge=0)  # steps of linear learning-rate warmup
    grad_clip: float = Field(1.0, gt=0)
    ema: float = Field(0.999, ge=0, lt=1)
    ema_warmup: bool = True  # decay min(ema, (1 + n)/(10 + n)) at update n, as the original


class DiffusionConfig(TrainerConfig):
    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
    val_fraction: float = Field(0.2, gt=0, lt=1)
    batch_size: int = Field(64, ge=1)
    forward: ForwardConfig = ForwardConfig()
    sigma: float = Field(0.01, gt=0)  # training noise on u_k
    delta: float = Field(0.0125, gt=0)  # sampling noise per reverse step
    model: UNetConfig = UNetConfig()
    optimizer: DiffusionOptimizer = DiffusionOptimizer()
    eval_batch: int = Field(256, ge=1)
    elbo_images: int = Field(0, ge=0)  # > 0: val/elbo_bpd on this many validation images
    elbo_prior: PriorTerm = "upper_bound"  # L_K: the original's analytic bound, or monte_carlo
    autocast_bf16: bool = False  # train under torch.autocast(bfloat16)
    compile: bool = False  # torch.compile the training forward pass
    samples: int = Field(36, ge=0)  # images per sample grid at the end (0: none)
    sample_modes: tuple[Mode, ...] = ("random",)
    # levels k drawn for the loss: below_K = 1..K−1 (the original's randint(1, K); sampling
    # still starts at K), all = 1..K (this trainer's earlier choice)
    train_levels: Literal["below_K", "all"] = "below_K"

    @model_validator(mode="after")
    def _levels(self) -> DiffusionConfig:
        if self.train_levels == "below_K" and self.forward.K < 2:
            raise ValueError(
                "train_levels 'below_K' draws k from 1..K−1, empty for forward.K = 1: "
                "use forward.K ≥ 2 or train_levels: all"
            )
        if len(self.model.mult) <= max(self.model.attention_levels, default=-1):
            raise ValueError(
                f"model.attention_levels {self.model.attention_levels} name a level the U-Net "
                f"does not have (levels 0..{len(self.model.mult) - 1})"
            )
        return self


class DiffusionTrainer(Trainer):
    Config = DiffusionConfig
    probes = ("weights",)
    distributed = True
    config: DiffusionConfig

    @classmethod
    def probe_sizes(cls, config: DiffusionConfig) -> dict[str, dict[str, int]]:
        with torch.device("meta"):
            model = UNet(config.model, image_shape(config.dataset)[0])
        return {"weights": {n: p.numel() for n, p in model.named_parameters()}}

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        self.parallel: Parallel = ctx.parallel
        torch.manual_seed(ctx.seed)  # same initial weights on every rank
        self.device = ctx.device
        xt, xv = self.load_data(ctx)
        self.train_x, self.val_x = xt.to(self.device), xv.to(self.device)
        shape = tuple(xt.shape[1:])
        self.forward = build_forward(cfg.forward, shape).to(self.device)
        module = UNet(cfg.model, shape[0]).to(self.device)
        optimizer = torch.optim.Adam(module.parameters(), lr=cfg.optimizer.lr)
        self.engine = build_engine(
            module, optimizer, self.parallel, self.device, cfg.optimizer.grad_clip, cfg.batch_size
        )
        if cfg.compile:
            self.engine.compile()
        with self.engine.full_parameters():
            self.ema = copy.deepcopy(self.engine.module).float().requires_grad_(False)
        # Each rank draws its own batches; evaluation uses fixed levels and noise.
        self.generator = torch.Generator().manual_seed(ctx.seed + 1 + 7919 * self.parallel.rank)
        eval_gen = torch.Generator().manual_seed(ctx.seed + 2)
        n = min(cfg.eval_batch, len(self.val_x))
        self.eval_k = self.draw_levels(n, eval_gen)
        self.eval_noise = torch.randn(n, *shape, generator=eval_gen)
        self.batches = Batches(
            len(self.train_x), cfg.batch_size, ctx.seed + 3 + 7919 * self.parallel.rank
        )
        self.steps = 0

    def load_data(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and validation images (N×C×H×W in [0, 1])."""
        cfg = self.config
        (xt, _), (xv, _) = load_dataset(cfg.dataset, ctx.data_dir, cfg.val_fraction, ctx.seed)
        return xt, xv

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def draw_levels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training levels k, uniform on 1..K−1 (``below_K``) or 1..K (``all``)."""
        top = self.config.forward.K + (self.config.train_levels == "all")
        return torch.randint(1, top, (n,), generator=generator)

    def _batch(self) -> torch.Tensor:
        return self.train_x[self.batches.next().to(self.device)]

    def loss(self, model, x: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """‖u_{k−1} − (ũ + f(ũ, k))‖² summed over pixels, batch mean, ũ = u_k + σ ε."""
        noisy = self.forward(x, k) + self.config.sigma * eps
        target = self.forward(x, k - 1)
        prediction = noisy + model(noisy, k)
        return (target - prediction).pow(2).reshape(len(x), -1).sum(1).mean()

    def step(self) -> dict[str, float]:
        cfg = self.config
        self.engine.module.train()
        x = self._batch()
        k = self.draw_levels(len(x), self.generator)
        eps = torch.randn(x.shape, generator=self.generator)
        lr = cfg.optimizer.lr * min(1.0, (self.steps + 1) / max(cfg.optimizer.warmup, 1))
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.autocast_bf16):
            loss = self.loss(self.engine, x, k.to(self.device), eps.to(self.device))
        grad_norm = self.engine.step(loss)
        self.steps += 1
        with torch.no_grad(), self.engine.full_parameters():
            decay = cfg.optimizer.ema
            if cfg.optimizer.ema_warmup:  # self.steps is n, the number of this update
                decay = min(decay, (1 + self.steps) / (10 + self.steps))
            for e, p in zip(self.ema.parameters(), self.engine.module.parameters()):
                e.lerp_(p.detach().float(), 1 - decay)
        return {"train/loss": loss.item(), "train/grad_norm": grad_norm, "train/lr": lr}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        cfg = self.config
        self.ema.eval()
        n = len(self.eval_k)
        x = self.val_x[:n]
        k, eps = self.eval_k.to(self.device), self.eval_noise.to(self.device)
        metrics = {"val/loss": float(self.loss(self.ema, x, k, eps))}
        if cfg.elbo_images:
            terms = self.elbo(self.val_x[: cfg.elbo_images])
            metrics["val/elbo_bpd"] = terms.bits_per_dim
        return metrics

    def elbo(self, x: torch.Tensor, seed: int = 0):
        """The negative ELBO terms of images ``x`` under the EMA model."""
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        return elbo(
            self.ema, self.forward, x, self.train_x, cfg.sigma, cfg.delta, gen, cfg.elbo_prior
        )

    def sample(self, n: int, mode: Mode = "random", seed: int = 0):
        """``n`` samples of the EMA model (see :func:`trainers.diffusion.sampling.sample`)."""
        self.ema.eval()
        gen = torch.Generator().manual_seed(seed)
        return sample(self.ema, self.forward, self.train_x, n, self.config.delta, mode, gen)

    def write_artifacts(self, folder: Path) -> list[Path]:
        from PIL import Image

        written = []
        for mode in self.config.sample_modes if self.config.samples else ():
            images = self.sample(self.config.samples, mode).images
            path = folder / f"samples_{mode}.png"
            Image.fromarray(image_grid(images, columns=math.ceil(math.sqrt(len(images))))).save(
                path
            )
            written.append(path)
        return written

    def probe(self, name: str) -> list[torch.Tensor]:
        if name == "weights":
            return [p.detach() for p in self.engine.module.parameters()]
        raise KeyError(name)

    def probe_columns(self, name: str) -> dict[str, list[int]]:
        return parameter_columns(self.engine.module)

    def state_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.state_dict(),
            "ema": self.ema.state_dict(),
            "generator": self.generator.get_state(),
            "batches": self.batches.state_dict(),
            "steps": self.steps,
            "dropout_rng": torch.get_rng_state(),  # dropout draws from the global generator
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        self.batches.load_state_dict(state["batches"])
        self.steps = int(state["steps"])
        torch.set_rng_state(state["dropout_rng"])

    def export(self) -> dict[str, Any]:
        return {"model": self.ema.state_dict()}


def load_exported(
    checkpoint: dict[str, Any],
    data_dir: Path,
    workdir: Path,
    device: torch.device | str = "cpu",
) -> DiffusionTrainer:
    """A trainer (data, forward process, EMA model) rebuilt from a run's ``model/model.pt``,
    on ``device``.

    Models exported before ``model.upsample_conv`` existed have no conv after upsampling; their
    config, which lacks the field, is read with it off."""
    from trainers.local import LocalContext

    if checkpoint.get("trainer") != "diffusion":
        raise ValueError(f"expected a diffusion model, got trainer {checkpoint.get('trainer')!r}")
    config = dict(checkpoint["config"])
    config["model"] = {"upsample_conv": False, **config.get("model", {})}
    trainer = DiffusionTrainer(DiffusionConfig.model_validate(config))
    seed, device = int(checkpoint["seed"]), torch.device(device)
    trainer.setup(LocalContext(workdir, seed=seed, data_dir=data_dir, device=device))
    trainer.ema.load_state_dict(checkpoint["state"]["model"])
    return trainer
