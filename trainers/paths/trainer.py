"""The ``paths`` trainer: a Bezier curve of networks through weight space (Dold et al.).

The control points θ_0..θ_K are flattened parameter vectors of one small MLP (depth × width,
relu / elu / tanh), each initialised independently. Per step: the expected Gaussian NLL
(learnable noise scale) over ``t_samples`` points t ~ U(0, 1) along the curve; with
``uniform_t`` each point is weighted by ‖b′(t)‖ / L so the expectation is uniform in arc
length. Per evaluation: ``val/loss`` (the NLL averaged over a t-grid of the validation split),
``val/loss_max`` along the curve, and the curve's ``val/path_length``, ``val/path_chord``,
``val/path_polygon`` and ``val/path_mean_curvature``. The curve with the best ``val/loss`` is kept
and exported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from trainers.base import Context, Trainer, TrainerConfig
from trainers.nets import mlp
from trainers.paths import bezier
from trainers.paths.data import csv_regression, diabetes, toy_regression

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


class PathsConfig(TrainerConfig):
    dataset: Literal["toy", "diabetes", "csv"] = "toy"
    csv_path: str = ""  # dataset csv: numeric columns, target last
    order: int = Field(2, ge=1)  # K: the curve has K + 1 control points
    depth: int = Field(2, ge=1)  # hidden layers
    width: int = Field(16, ge=1)
    activation: Literal["relu", "elu", "tanh"] = "relu"
    t_samples: int = Field(8, ge=1)
    uniform_t: bool = False
    lr: float = Field(1e-2, gt=0)
    eval_points: int = Field(21, ge=2)


def network(inputs: int, config: PathsConfig) -> nn.Sequential:
    """The regression MLP whose weights the curve moves through: depth × width → 1."""
    return mlp([inputs, *[config.width] * config.depth, 1], ACTIVATIONS[config.activation])


def load_splits(config: PathsConfig, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if config.dataset == "toy":
        return toy_regression(seed)
    if config.dataset == "diabetes":
        return diabetes(seed)
    return csv_regression(config.csv_path, seed)


def initial_control_points(config: PathsConfig, inputs: int, seed: int) -> torch.Tensor:
    """θ_0..θ_K: independent initialisations of the same network, (K+1)×P."""
    points = []
    for k in range(config.order + 1):
        torch.manual_seed(seed * 1000 + k)
        net = network(inputs, config)
        points.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return torch.stack(points)


def gaussian_log_likelihood(y: torch.Tensor, pred: torch.Tensor, log_scale) -> torch.Tensor:
    """Pointwise log N(y; pred, exp(log_scale)²): N."""
    resid = (y - pred).flatten()
    return -0.5 * (math.log(2 * math.pi) + 2 * log_scale + resid**2 / torch.exp(2 * log_scale))


def unflatten(flat: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """A flat weight vector as the named parameters of the network."""
    params, start = {}, 0
    for name, shape in shapes.items():
        n = shape.numel()
        params[name] = flat[start : start + n].reshape(shape)
        start += n
    return params


class PathsTrainer(Trainer):
    Config = PathsConfig
    probes = ("control_points",)
    config: PathsConfig
    pack_fields = ("uniform_t", "lr")
    packed = "trainers.paths.packed:PackedPathsTrainer"

    @classmethod
    def prepare(cls, configs: list[PathsConfig], data_dir: Path) -> None:
        for c in configs:  # toy and diabetes need nothing; a CSV must be there and readable
            if c.dataset == "csv":
                csv_regression(c.csv_path)

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        self.device = ctx.device
        splits = load_splits(cfg, ctx.seed)
        self.data = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in splits.items()}
        inputs = self.data["train"][0].shape[1]
        self.template = network(inputs, cfg).to(self.device)
        self.shapes = {n: p.shape for n, p in self.template.named_parameters()}
        theta = initial_control_points(cfg, inputs, ctx.seed)
        self.theta = nn.Parameter(theta.to(self.device))
        self.log_scale = nn.Parameter(torch.zeros((), device=self.device))
        self.optimizer = torch.optim.Adam([self.theta, self.log_scale], lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(ctx.seed + 1)
        self.best: dict[str, Any] = {"val_loss": math.inf}

    def predict(self, flat: torch.Tensor, part: str) -> torch.Tensor:
        """The network with flat weights ``flat`` on split ``part``: N×1."""
        return functional_call(self.template, unflatten(flat, self.shapes), (self.data[part][0],))

    def log_likelihood(self, flat: torch.Tensor, part: str, log_scale=None) -> torch.Tensor:
        """Pointwise Gaussian log-likelihood of split ``part`` under weights ``flat``: N."""
        log_scale = self.log_scale if log_scale is None else log_scale
        return gaussian_log_likelihood(self.data[part][1], self.predict(flat, part), log_scale)

    def nll(self, t: torch.Tensor, part: str, theta=None, log_scale=None) -> torch.Tensor:
        """Gaussian NLL per point of the curve at ``t`` on split ``part``: len(t)."""
        theta = self.theta if theta is None else theta
        log_scale = self.log_scale if log_scale is None else log_scale
        return torch.stack(
            [-self.log_likelihood(flat, part, log_scale).mean() for flat in bezier.point(theta, t)]
        )

    def step(self) -> dict[str, float]:
        cfg = self.config
        t = torch.rand(cfg.t_samples, generator=self.generator).to(self.device)
        losses = self.nll(t, "train")
        if cfg.uniform_t:
            with torch.no_grad():
                grid = torch.linspace(0, 1, 257, device=self.device)
                length = torch.trapezoid(bezier.speed(self.theta, grid), grid)
                weights = bezier.speed(self.theta, t) / length.clamp_min(1e-12)
            loss = (weights * losses).mean()
        else:
            loss = losses.mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {
            "train/loss": loss.item(),
            "train/noise_scale": float(self.log_scale.detach().exp()),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        t = torch.linspace(0, 1, self.config.eval_points, device=self.device)
        val = self.nll(t, "val")
        metrics = {"val/loss": float(val.mean()), "val/loss_max": float(val.max())}
        metrics.update({f"val/path_{k}": v for k, v in bezier.metrics(self.theta).items()})
        if metrics["val/loss"] < self.best["val_loss"]:
            self.best = {
                "val_loss": metrics["val/loss"],
                "theta": self.theta.detach().clone(),
                "log_scale": self.log_scale.detach().clone(),
            }
        metrics["val/best_loss"] = self.best["val_loss"]
        return metrics

    def probe(self, name: str) -> torch.Tensor:
        if name == "control_points":
            return self.theta.detach().reshape(-1)
        raise KeyError(name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": self.theta.detach().clone(),
            "log_scale": self.log_scale.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "best": dict(self.best),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
            self.log_scale.copy_(state["log_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.generator.set_state(state["generator"])
        self.best = dict(state["best"])

    def export(self) -> dict[str, Any]:
        best = (
            self.best
            if "theta" in self.best
            else {"theta": self.theta.detach(), "log_scale": self.log_scale.detach()}
        )
        return {
            "theta": best["theta"],
            "log_scale": best["log_scale"],
            "shapes": {k: list(v) for k, v in self.shapes.items()},
        }
