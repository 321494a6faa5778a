"""The packed form of the ``paths`` trainer: many grid points' Bezier curves trained at once.

Members share the network (dataset, order, depth, width, activation, t_samples, eval_points)
and differ in seed, ``lr``, ``uniform_t`` and ``uniform_t_weights``. Every tensor of
:class:`PathsTrainer` gets a leading member dimension. An MLP runs batched by hand over members
× curve points (tensors M×T×N×width: one matrix product a layer, in-place activations); a CNN
is ``vmap``-ed over members and, inside, over the points t. Only the ``uniform_t`` members
compute arc-length weights, all in one product over the 10,000-point grid
(:func:`bezier.arc_length_weights_batch`); the curve metrics are batched too. Each member
draws its t samples from its own generator, initialises its control points as the unpacked
trainer does and is updated by :class:`StackedAdam` with its own learning rate, so its losses
equal the unpacked run's (tests: within 1e-5 in float32, 1e-12 in float64). Regression data
(drawn per seed) are stacked per member; an image dataset's one split is shared by all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
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
    network,
    unflatten,
)
from trainers.paths.trainer import PathsConfig, PathsTrainer

# model.ACTIVATIONS, in place (on temporaries of the batched MLP)
INPLACE = {"relu": torch.relu_, "elu": F.elu_, "tanh": torch.tanh_}


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
        self.pack_size = len(configs)

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
        theta = initial_points(cfg, shape, self.seeds)
        self.theta = nn.Parameter(theta.to(device, dtype))
        noise = [math.log(c.noise_init) for c in self.configs]
        self.log_scale = nn.Parameter(torch.tensor(noise, device=device, dtype=dtype))
        lr = torch.tensor([c.lr for c in self.configs], device=device, dtype=dtype)
        self.optimizer = StackedAdam([self.theta, self.log_scale], lr)
        # The uniform_t members (their arc-length weights, constant where detached), or None
        uniform = [i for i, c in enumerate(self.configs) if c.uniform_t]
        detached = [self.configs[i].uniform_t_weights == "detached" for i in uniform]
        self.weighted = None
        if uniform:
            mask = torch.tensor(detached, device=device)[:, None, None]
            self.weighted = torch.tensor(uniform, device=device), mask
        self.layers = self._layers()
        self.generators = [torch.Generator().manual_seed(s + 1) for s in self.seeds]
        n_train = self.data["train"][1].shape[1 - self.shared]
        self.batches = [Batches(n_train, cfg.batch_size or n_train, s + 2) for s in self.seeds]
        self.best_loss = torch.full((self.pack_size,), math.inf, device=device, dtype=dtype)
        self.best_theta = self.theta.detach().clone()
        self.best_log_scale = self.log_scale.detach().clone()

    def _layers(self) -> list[tuple[int, int]] | None:
        """An MLP's layers as (out, in) (its flat vector: weight, bias, weight, bias, …);
        None for a CNN (run through ``vmap`` of the template instead)."""
        if self.config.architecture != "mlp":
            return None
        return [tuple(shape) for shape in list(self.shapes.values())[::2]]

    def _mlp(self, flats: torch.Tensor, x: torch.Tensor, data_dim) -> torch.Tensor:
        """The MLP of every member at every curve point, batched by hand (no ``vmap``):
        M×T×N×outputs from flats M×T×P and x (M×N×d per member, or N×d shared)."""
        members, points = flats.shape[:2]
        sizes = [n for out_f, in_f in self.layers for n in (out_f * in_f, out_f)]
        pieces = flats.split(sizes, -1)  # one gradient copy back, not one a piece
        h = x if data_dim is None else x[:, None]
        for i, (out_f, in_f) in enumerate(self.layers):
            weight = pieces[2 * i].unflatten(-1, (out_f, in_f)).mT  # M×T×in×out
            bias = pieces[2 * i + 1][..., None, :]
            if h.dim() == 2:  # inputs shared by all: one product for every member and point
                n = len(h)
                h = h @ weight.permute(2, 0, 1, 3).reshape(in_f, -1)
                h = h.view(n, members, points, out_f).permute(1, 2, 0, 3) + bias
            elif in_f == 1:
                h = torch.addcmul(bias, h, weight)
            elif out_f == 1:  # a product and a sum: cheaper than a matrix product with 1 column
                h = (h * weight.mT).sum(-1, keepdim=True) + bias
            else:
                h = torch.matmul(h, weight) + bias
            if i < len(self.layers) - 1:
                h = INPLACE[self.config.activation](h)
        return h

    def _outputs(self, flats: torch.Tensor, x: torch.Tensor, data_dim) -> torch.Tensor:
        """Network outputs per member and curve point: flats members×T×P on x (per member
        when ``data_dim`` is 0, shared when None)."""
        if self.layers is not None:
            return self._mlp(flats, x, data_dim)

        def member(points, xs):
            return torch.vmap(
                lambda flat: functional_call(self.template, unflatten(flat, self.shapes), (xs,))
            )(points)

        return torch.vmap(member, in_dims=(0, data_dim))(flats, x)

    def curve_outputs(self, t: torch.Tensor, x: torch.Tensor, data_dim) -> torch.Tensor:
        """Each member's network at each point of its curve at ``t`` (members × len(t))."""
        return self._outputs(bezier.points(self.theta, t), x, data_dim)

    def nll(self, out: torch.Tensor, y: torch.Tensor, data_dim) -> torch.Tensor:
        """NLL of ``y`` per member and curve point under ``out`` (see :meth:`curve_outputs`):
        the unpacked :func:`log_likelihood`, broadcast over members and points."""
        y = y if data_dim is None else y[:, None]
        if self.classify:
            labels = y.expand(out.shape[:-1])[..., None]
            return -F.log_softmax(out, -1).gather(-1, labels).squeeze(-1).mean(-1)
        resid = (y - out).flatten(-2)
        log_scale = self.log_scale[:, None, None]
        var = torch.exp(2 * log_scale)
        return -(-0.5 * (math.log(2 * math.pi) + 2 * log_scale + resid**2 / var)).mean(-1)

    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        x, y = self.data["train"]
        if not self.config.batch_size:
            return x, y, None if self.shared else 0
        idx = torch.stack([b.next() for b in self.batches]).to(self.device)
        if self.shared:
            return x[idx], y[idx], 0
        rows = torch.arange(self.pack_size, device=self.device)[:, None]
        return x[rows, idx], y[rows, idx], 0

    def step(self) -> dict[str, list[float]]:
        cfg = self.config
        t = torch.stack([torch.rand(cfg.t_samples, generator=g) for g in self.generators])
        t = t.to(self.device, self.dtype)
        x, y, data_dim = self._train_data()
        losses = self.nll(self.curve_outputs(t, x, data_dim), y, data_dim)
        loss = losses.mean(1)
        if self.weighted is not None:  # only the uniform_t members' arc-length weights
            idx, detached = self.weighted
            theta = self.theta[idx]
            theta = torch.where(detached, theta.detach(), theta)  # detached: constants
            weights = bezier.arc_length_weights_batch(theta, t[idx])
            loss = loss.index_copy(0, idx, (weights * losses[idx]).mean(1))
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
        t = t.expand(self.pack_size, -1)
        x, y = self.data["val"]
        data_dim = None if self.shared else 0
        out = self.curve_outputs(t, x, data_dim)  # once, for the loss and the accuracy
        val = self.nll(out, y, data_dim)
        loss = val.mean(1)
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_theta[better] = self.theta[better]
        self.best_log_scale[better] = self.log_scale[better]
        metrics = {"val/loss": loss.tolist(), "val/loss_max": val.max(1).values.tolist()}
        if self.classify:
            labels = y if data_dim is None else y[:, None]
            hits = out.argmax(-1).eq(labels).float().mean(-1)  # per point, as unpacked
            metrics["val/acc"] = hits.mean(-1).tolist()
        curves = bezier.metrics_batch(self.theta)
        metrics.update({f"val/path_{k}": v for k, v in curves.items()})
        metrics["val/best_loss"] = self.best_loss.tolist()
        return metrics

    def probe(self, name: str) -> torch.Tensor:
        if name == "control_points":
            return self.theta.detach().reshape(self.pack_size, -1)
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
            for i in range(self.pack_size)
        ]


def initial_points(config: PathsConfig, shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """:func:`initial_control_points` of each seed, stacked, value for value: one network
    re-initialised from the same seeds in the same order (as its constructor does) instead
    of K + 1 networks a seed, each after ``torch.manual_seed`` (which queues a CUDA seed with
    a stack trace): ~8 ms a member less."""
    if config.endpoints is not None:
        return torch.stack([initial_control_points(config, shape, s) for s in seeds])
    net = network(shape, config)
    modules = [m for m in net.modules() if hasattr(m, "reset_parameters")]
    curves = []
    for seed in seeds:
        points = []
        for k in range(config.order + 1):
            torch.default_generator.manual_seed(seed * 1000 + k)
            for module in modules:
                module.reset_parameters()
            points.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
        curves.append(torch.stack(points))
    return torch.stack(curves)
