"""The packed form of the ``paths`` trainer: many grid points' Bezier curves trained at once.

Members share the network (dataset, order, depth, width, activation, t_samples, eval_points)
and differ in seed, ``lr`` and ``uniform_t``. Every tensor of :class:`PathsTrainer` gets a
leading member dimension; the NLL is ``vmap``-ed over members and, inside, over the points t of
the curve. Each member draws its t samples from its own generator, initialises its control
points as the unpacked trainer does and is updated by :class:`StackedAdam` with its own
learning rate, so its losses equal the unpacked run's (tests: within 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from trainers.base import Context, Trainer
from trainers.packing import StackedAdam, pack_key
from trainers.paths import bezier
from trainers.paths.trainer import (
    PathsConfig,
    PathsTrainer,
    gaussian_log_likelihood,
    initial_control_points,
    load_splits,
    network,
    unflatten,
)


class PackedPathsTrainer(Trainer):
    Config = PathsConfig
    probes = PathsTrainer.probes
    config: PathsConfig

    def __init__(self, configs: list[PathsConfig], seeds: list[int]) -> None:
        if len({pack_key(PathsTrainer, c) for c in configs}) != 1:
            raise ValueError(
                "a pack's configs may differ only in " + ", ".join(PathsTrainer.pack_fields)
            )
        super().__init__(configs[0])
        self.configs, self.seeds = list(configs), list(seeds)
        self.members = len(configs)

    def setup(self, ctx: Context) -> None:
        cfg, device = self.config, ctx.device
        self.device = device
        splits = [load_splits(cfg, seed) for seed in self.seeds]
        self.data = {
            part: tuple(torch.stack([s[part][i] for s in splits]).to(device) for i in (0, 1))
            for part in splits[0]
        }
        inputs = self.data["train"][0].shape[2]
        self.template = network(inputs, cfg).to(device)
        self.shapes = {n: p.shape for n, p in self.template.named_parameters()}
        theta = torch.stack([initial_control_points(cfg, inputs, s) for s in self.seeds])
        self.theta = nn.Parameter(theta.to(device))
        self.log_scale = nn.Parameter(torch.zeros(self.members, device=device))
        lr = torch.tensor([c.lr for c in self.configs], device=device)
        self.optimizer = StackedAdam([self.theta, self.log_scale], lr)
        self.uniform_t = torch.tensor([c.uniform_t for c in self.configs], device=device)
        self.generators = [torch.Generator().manual_seed(s + 1) for s in self.seeds]
        self.best_loss = torch.full((self.members,), math.inf, device=device)
        self.best_theta = self.theta.detach().clone()
        self.best_log_scale = self.log_scale.detach().clone()

    def nll(self, t: torch.Tensor, part: str) -> torch.Tensor:
        """Gaussian NLL per member and point of its curve at ``t`` (members × len): same."""
        x, y = self.data[part]

        def member(theta, ts, xs, ys, log_scale):
            def at(flat):
                pred = functional_call(self.template, unflatten(flat, self.shapes), (xs,))
                return -gaussian_log_likelihood(ys, pred, log_scale).mean()

            return torch.vmap(at)(bezier.point(theta, ts))

        return torch.vmap(member)(self.theta, t, x, y, self.log_scale)

    def step(self) -> dict[str, list[float]]:
        cfg = self.config
        t = torch.stack([torch.rand(cfg.t_samples, generator=g) for g in self.generators])
        t = t.to(self.device)
        losses = self.nll(t, "train")
        with torch.no_grad():
            grid = torch.linspace(0, 1, 257, device=self.device)
            length = torch.trapezoid(torch.vmap(bezier.speed, (0, None))(self.theta, grid), grid)
            weights = torch.vmap(bezier.speed)(self.theta, t) / length.clamp_min(1e-12)[:, None]
        loss = torch.where(self.uniform_t, (weights * losses).mean(1), losses.mean(1))
        self.optimizer.zero_grad()
        loss.sum().backward()  # members are independent: each gets its own gradient
        self.optimizer.step()
        return {
            "train/loss": loss.tolist(),
            "train/noise_scale": self.log_scale.detach().exp().tolist(),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        t = torch.linspace(0, 1, self.config.eval_points, device=self.device)
        val = self.nll(t.expand(self.members, -1), "val")
        loss = val.mean(1)
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_theta[better] = self.theta[better]
        self.best_log_scale[better] = self.log_scale[better]
        curves = [bezier.metrics(theta) for theta in self.theta]
        metrics = {"val/loss": loss.tolist(), "val/loss_max": val.max(1).values.tolist()}
        metrics.update({f"val/path_{k}": [c[k] for c in curves] for k in curves[0]})
        metrics["val/best_loss"] = self.best_loss.tolist()
        return metrics

    def probe(self, name: str) -> torch.Tensor:
        if name == "control_points":
            return self.theta.detach().reshape(self.members, -1)
        raise KeyError(name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": self.theta.detach().clone(),
            "log_scale": self.log_scale.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "best_loss": self.best_loss.clone(),
            "best_theta": self.best_theta.clone(),
            "best_log_scale": self.best_log_scale.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name in ("theta", "log_scale", "best_loss", "best_theta", "best_log_scale"):
                getattr(self, name).copy_(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        for g, saved in zip(self.generators, state["generators"]):
            g.set_state(saved)

    def export(self) -> list[dict[str, Any]]:
        """One export per member, as :meth:`PathsTrainer.export` writes it."""
        found = torch.isfinite(self.best_loss)
        shapes = {k: list(v) for k, v in self.shapes.items()}
        return [
            {
                "theta": (self.best_theta[i] if found[i] else self.theta[i]).detach().clone(),
                "log_scale": (self.best_log_scale[i] if found[i] else self.log_scale[i])
                .detach()
                .clone(),
                "shapes": shapes,
            }
            for i in range(self.members)
        ]
