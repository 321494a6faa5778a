"""Vectorised trial packing: many small grid points trained as one batched model.

Grid points that share an architecture (they differ only in a trainer's ``pack_fields`` and the
seed) run as one *packed* trainer inside one Tune trial: parameters carry a leading member
dimension and the forward pass is batched over it (an MLP by hand, with batched matrix
products: see the packed trainer, e.g. :mod:`trainers.paths.packed`). Members never mix: the
loss is the sum of the members' losses, so each member's gradient is the one it would have
alone, and :class:`StackedAdam` updates each member with its own learning rate exactly as
``torch.optim.Adam`` would. A packed trainer (``pack_size`` members) returns from
``step``/``evaluate`` one value per member for each metric (a list or a 1-d tensor); the loop
hands each member's values to that member's own run.

A trainer opts in with ``pack_fields`` (config fields that may differ inside a pack) and
``packed`` (``"module:Class"`` of its packed form, built from ``(configs, seeds)``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from typing import Any

import torch

from trainers.base import Trainer, TrainerConfig


def packed_class(cls: type[Trainer]) -> type[Trainer]:
    """The packed form of trainer ``cls`` (``ValueError`` when it has none)."""
    if not cls.packed:
        raise ValueError(f"{cls.__name__} has no packed form")
    module, attr = cls.packed.split(":")
    return getattr(importlib.import_module(module), attr)


def pack_key(cls: type[Trainer], config: TrainerConfig) -> str:
    """Points with equal keys can share a pack: every field except ``pack_fields`` equal."""
    fields = config.model_dump(mode="json")
    return json.dumps({k: v for k, v in fields.items() if k not in cls.pack_fields}, sort_keys=True)


def member_rows(metrics: dict[str, Any], pack_size: int) -> list[dict[str, float]]:
    """Per-member metric dicts from a trainer's metrics: floats or 0-d tensors (an ordinary
    trainer), or lists or 1-d tensors with one value per member (a packed one, of any size).
    Tensors are copied to the host one by one here (the loop batches them when it can)."""
    if any(isinstance(v, torch.Tensor) for v in metrics.values()):
        metrics = host_metrics(metrics)
    if not any(isinstance(v, list | tuple) for v in metrics.values()):
        return [dict(metrics)]
    return [{k: float(v[i]) for k, v in metrics.items()} for i in range(pack_size)]


def host_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trainer's metrics with tensors copied to the host (one at a time: for tests and
    tools; the loop batches the copies)."""
    return {k: to_host(v) for k, v in metrics.items()}


def to_host(value: Any) -> Any:
    """A metric value on the host: a tensor becomes a number (0-d) or a list (1-d)."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


class StackedAdam:
    """Adam over tensors whose first dimension is the member, with one learning rate per member.

    The update is ``torch.optim.Adam``'s (defaults: betas 0.9/0.999, eps 1e-8, no weight decay,
    no amsgrad), term for term, so a member's trajectory equals an unpacked run's up to float
    rounding.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: torch.Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = lr.detach().clone()
        self.betas, self.eps = betas, eps
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.step_count += 1
        bias1 = 1 - beta1**self.step_count
        bias2_sqrt = (1 - beta2**self.step_count) ** 0.5
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step_size = (self.lr / bias1).reshape(-1, *[1] * (p.dim() - 1))
            denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
            p.sub_(step_size * (m / denom))

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        for mine, saved in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]
        ):
            mine.copy_(saved)
