"""How a trainer's model is stepped: one process, DDP, or DeepSpeed — behind one small API.

A trainer builds its module and a client ``torch.optim`` optimizer, then asks
:func:`build_engine` for an :class:`Engine` and only calls ``engine(...)`` (forward),
``engine.step(loss)`` (backward, clip, update) and ``engine.module`` (the bare model). Which
engine it gets follows the context's :class:`Parallel` plan, set by the orchestrator from
``resources:`` (``workers``, ``strategy``, ``zero_stage``, ``precision``). Trainers never
import Ray: under Ray Train the process group already exists when ``setup`` runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Strategy = Literal["ddp", "deepspeed"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Parallel:
    """This process's place in a (possibly distributed) trial."""

    world_size: int = 1
    rank: int = 0
    strategy: Strategy = "ddp"
    zero_stage: int = 0
    precision: Precision = "fp32"

    @property
    def chief(self) -> bool:
        return self.rank == 0


class Engine:
    """One process: backward, gradient clipping and the optimiser step."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, clip: float | None):
        self.module, self.model, self.optimizer, self.clip = module, module, optimizer, clip

    def __call__(self, *args: Any) -> torch.Tensor:
        return self.model(*args)

    def step(self, loss: torch.Tensor) -> float:
        """Backward + clip + update; returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.module.parameters(), self.clip or float("inf"))
        self.optimizer.step()
        return float(norm)

    def compile(self) -> None:
        """``torch.compile`` the forward pass (the bare ``module`` keeps its state-dict keys)."""
        self.model = torch.compile(self.model)

    def full_parameters(self) -> contextlib.AbstractContextManager:
        """Inside: ``module.parameters()`` are whole tensors (ZeRO-3 partitions them)."""
        return contextlib.nullcontext()

    def state_dict(self) -> dict[str, Any]:
        with self.full_parameters():
            model = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return {"model": model, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


class DDPEngine(Engine):
    """PyTorch DistributedDataParallel over the process group Ray Train set up."""

    def __init__(self, module, optimizer, clip, device: torch.device):
        super().__init__(module, optimizer, clip)
        ids = [device.index] if device.type == "cuda" else None
        self.model = nn.parallel.DistributedDataParallel(module, device_ids=ids)


class DeepSpeedEngine(Engine):
    """``deepspeed.initialize`` with a client optimizer (no fused-op compilation); ZeRO 0–3.

    On a machine without CUDA it runs on DeepSpeed's CPU accelerator (gloo). ZeRO ≥ 1 keeps
    each rank's share of the optimizer state: a checkpoint stores the whole model and, at
    stage 0, the optimizer; at stages 1–3 a resumed trial restarts the optimizer state.
    """

    def __init__(self, module, optimizer, clip, parallel: Parallel, batch_size: int):
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": batch_size,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": parallel.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if clip:
            config["gradient_clipping"] = clip
        if parallel.precision == "bf16":
            config["bf16"] = {"enabled": True}
        elif parallel.precision == "fp16":
            config["fp16"] = {"enabled": True, "initial_scale_power": 12}
        super().__init__(module, optimizer, clip)
        self.stage = parallel.zero_stage
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=config, dist_init_required=False
        )
        self.module = self.model.module

    def __call__(self, *args: Any) -> torch.Tensor:
        dtype = next(iter(self.model.parameters())).dtype
        cast = [a.to(dtype) if torch.is_floating_point(a) else a for a in args]
        return self.model(*cast).float()

    def step(self, loss: torch.Tensor) -> float:
        self.model.backward(loss)
        self.model.step()
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def compile(self) -> None:
        self.model.compile()

    def full_parameters(self) -> contextlib.AbstractContextManager:
        if self.stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.module.parameters()))

    def state_dict(self) -> dict[str, Any]:
        with self.full_parameters():
            model = {k: v.detach().float().clone() for k, v in self.module.state_dict().items()}
        optimizer = self.optimizer.state_dict() if self.stage == 0 else None
        return {"model": model, "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self.full_parameters():
            own = self.module.state_dict()
            self.module.load_state_dict({k: v.to(own[k].dtype) for k, v in state["model"].items()})
        if self.stage == 0 and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def build_engine(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    parallel: Parallel,
    device: torch.device,
    clip: float | None = None,
    batch_size: int = 1,
) -> Engine:
    """The engine for this process: plain, DDP (``world_size > 1``) or DeepSpeed."""
    if parallel.strategy == "deepspeed":
        return DeepSpeedEngine(module, optimizer, clip, parallel, batch_size)
    if parallel.world_size > 1:
        return DDPEngine(module, optimizer, clip, device)
    return Engine(module, optimizer, clip)
