"""The packed form of the ``paths`` trainer: many grid points' Bezier curves trained at once.

Members share the network (dataset, order, depth, width, activation, t_samples, eval_points)
and differ in seed, ``lr``, ``uniform_t`` and ``uniform_t_weights``. Every tensor of
:class:`PathsTrainer` gets a leading member dimension; the NLL is ``vmap``-ed over members and,
inside, over the points t of the curve. Each member draws its t samples from its own generator,
initialises its control points as the unpacked trainer does and is updated by
:class:`StackedAdam` with its own learning rate, so its losses equal the unpacked run's (tests:
within 1e-5 in float32, 1e-12 in float64). Regression data (drawn per seed) are stacked per
member; an image dataset's one split is shared by all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from trainers.base import Context, Trainer
from trainers.data import Batches
from trainers.packing import StackedAdam, pack_key
from trainers.paths import bezier
from trainers.paths.model import (
    cast,
    initial_control_points,
    is_classification,
    load_splits,
    log_likelihood,
    network,
    unflatten,
)
from trainers.paths.trainer import PathsConfig, PathsTrainer


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
        self.classify = is_classification(cfg)
        self.shared = self.classify  # one split for every seed
        self.dtype = dtype = getattr(torch, cfg.dtype)
        if self.shared:
            splits = load_splits(cfg, 0, ctx.data_dir)
            self.data = {k: cast(x, y, device, dtype) for k, (x, y) in splits.items()}
        else:
            members = [load_splits(cfg, seed, ctx.data_dir) for seed in self.seeds]
            self.data = {
                part: cast(
                    *(torch.stack([m[part][i] for m in members]) for i in (0, 1)), device, dtype
                )
                for part in members[0]
            }
        shape = tuple(self.data["train"][0].shape[2 - self.shared :])
        self.template = network(shape, cfg).to(device)
        self.shapes = {n: p.shape for n, p in self.template.named_parameters()}
        theta = torch.stack([initial_control_points(cfg, shape, s) for s in self.seeds])
        self.theta = nn.Parameter(theta.to(device, dtype))
        self.log_scale = nn.Parameter(torch.zeros(self.members, device=device, dtype=dtype))
        lr = torch.tensor([c.lr for c in self.configs], device=device, dtype=dtype)
        self.optimizer = StackedAdam([self.theta, self.log_scale], lr)
        self.uniform_t = torch.tensor([c.uniform_t for c in self.configs], device=device)
        self.detached = [c.uniform_t_weights == "detached" for c in self.configs]
        self.generators = [torch.Generator().manual_seed(s + 1) for s in self.seeds]
        n_train = self.data["train"][1].shape[1 - self.shared]
        self.batches = [Batches(n_train, cfg.batch_size or n_train, s + 2) for s in self.seeds]
        self.best_loss = torch.full((self.members,), math.inf, device=device, dtype=dtype)
        self.best_theta = self.theta.detach().clone()
        self.best_log_scale = self.log_scale.detach().clone()

    def _outputs(self, flats: torch.Tensor, x: torch.Tensor, data_dim) -> torch.Tensor:
        """Network outputs per member and curve point: flats members×T×P on x (per member
        when ``data_dim`` is 0, shared when None)."""

        def member(points, xs):
            return torch.vmap(
                lambda flat: functional_call(self.template, unflatten(flat, self.shapes), (xs,))
            )(points)

        return torch.vmap(member, in_dims=(0, data_dim))(flats, x)

    def curve_outputs(self, t: torch.Tensor, x: torch.Tensor, data_dim) -> torch.Tensor:
        """Each member's network at each point of its curve at ``t`` (members × len(t))."""
        return self._outputs(torch.vmap(bezier.point)(self.theta, t), x, data_dim)

    def nll(self, out: torch.Tensor, y: torch.Tensor, data_dim) -> torch.Tensor:
        """NLL of ``y`` per member and curve point under ``out`` (see :meth:`curve_outputs`)."""

        def member(outs, ys, log_scale):
            return torch.vmap(lambda o: -log_likelihood(ys, o, log_scale, self.classify).mean())(
                outs
            )

        return torch.vmap(member, in_dims=(0, data_dim, 0))(out, y, self.log_scale)

    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        x, y = self.data["train"]
        if not self.config.batch_size:
            return x, y, None if self.shared else 0
        idx = torch.stack([b.next() for b in self.batches]).to(self.device)
        if self.shared:
            return x[idx], y[idx], 0
        rows = torch.arange(self.members, device=self.device)[:, None]
        return x[rows, idx], y[rows, idx], 0

    def step(self) -> dict[str, list[float]]:
        cfg = self.config
        t = torch.stack([torch.rand(cfg.t_samples, generator=g) for g in self.generators])
        t = t.to(self.device, self.dtype)
        x, y, data_dim = self._train_data()
        losses = self.nll(self.curve_outputs(t, x, data_dim), y, data_dim)
        weights = torch.ones_like(losses)
        if self.uniform_t.any():
            weights = torch.vmap(bezier.arc_length_weights)(self.theta, t)
        if any(self.detached):  # those members' weights are constants, as unpacked
            with torch.no_grad():
                fixed = torch.vmap(bezier.arc_length_weights)(self.theta, t)
            mask = torch.tensor(self.detached, device=self.device)[:, None]
            weights = torch.where(mask, fixed, weights)
        loss = torch.where(self.uniform_t, (weights * losses).mean(1), losses.mean(1))
        self.optimizer.zero_grad()
        loss.sum().backward()  # members are independent: each gets its own gradient
        if cfg.endpoints is not None:  # the given networks stay where they are
            self.theta.grad[:, [0, -1]] = 0
        self.optimizer.step()
        metrics = {"train/loss": loss.tolist()}
        if not self.classify:
            metrics["train/noise_scale"] = self.log_scale.detach().exp().tolist()
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        t = torch.linspace(0, 1, self.config.eval_points, device=self.device, dtype=self.dtype)
        t = t.expand(self.members, -1)
        x, y = self.data["val"]
        data_dim = None if self.shared else 0
        out = self.curve_outputs(t, x, data_dim)  # once, for the loss and the accuracy
        val = self.nll(out, y, data_dim)
        loss = val.mean(1)
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_theta[better] = self.theta[better]
        self.best_log_scale[better] = self.log_scale[better]
        curves = [bezier.metrics(theta) for theta in self.theta]
        metrics = {"val/loss": loss.tolist(), "val/loss_max": val.max(1).values.tolist()}
        if self.classify:
            metrics["val/acc"] = out.argmax(-1).eq(y).float().mean((1, 2)).tolist()
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
            "batches": [b.state_dict() for b in self.batches],
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
        for b, saved in zip(self.batches, state["batches"]):
            b.load_state_dict(saved)

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
