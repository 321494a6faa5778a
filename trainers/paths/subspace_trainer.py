"""The ``subspace`` trainer: sample the posterior around a trained Bezier path.

Reads a ``paths`` run's final model (``path_model``: its ``model/model.pt``), builds the chosen
space around its curve (see :mod:`trainers.paths.sampling`), and runs ``chains`` NUTS chains
one after another, one transition per loop step (``warmup`` + ``draws`` each; set
``stop.iterations`` to at least ``chains × (warmup + draws)``). Per step: ``train/potential``.
When the last chain is done, evaluation reports ``val/rhat_max``, ``val/ess_bulk_min`` (ArviZ),
``val/lppd`` and ``val/elpd_loo`` (PSIS-LOO) and ``val/rmse`` (regression) or ``val/acc``
(classification) of the posterior predictive mean on the test split, with ``val/grad_evals``
and ``val/sample_seconds``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from trainers.base import Context, Trainer, TrainerConfig
from trainers.local import LocalContext
from trainers.paths import sampling
from trainers.paths.model import load_paths_model
from trainers.paths.trainer import PathsConfig, PathsTrainer


class SubspaceConfig(TrainerConfig):
    path_model: str = ""  # model/model.pt of a finished ``paths`` run
    space: Literal["line", "varphi", "lambda", "fullspace"] = "varphi"
    tube_scale: float = Field(0.1, gt=0)  # lambda: radius of a unit offset from the curve
    temperature: float = Field(1.0, gt=0)
    prior_scale: float = Field(1.0, gt=0)
    chains: int = Field(2, ge=1)
    warmup: int = Field(200, ge=1)
    draws: int = Field(300, ge=2)


class SubspaceTrainer(Trainer):
    Config = SubspaceConfig
    config: SubspaceConfig

    @classmethod
    def prepare(cls, configs: list[SubspaceConfig], data_dir: Path) -> None:
        for c in configs:
            _load_path(c.path_model)  # a missing or wrong file fails before Ray starts

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        header = _load_path(cfg.path_model)
        self.path = PathsTrainer(PathsConfig.model_validate(header["config"]))
        self.path.setup(
            LocalContext(
                ctx.workdir, seed=int(header["seed"]), device=ctx.device, data_dir=ctx.data_dir
            )
        )
        state = header["state"]
        self.theta = state["theta"].to(ctx.device)
        self.log_scale = state["log_scale"].to(ctx.device)
        self.dim, self.weights, self.log_prior = sampling.parametrisation(
            cfg.space, self.theta, cfg.prior_scale, cfg.tube_scale
        )
        self.seed = ctx.seed
        self.samples: list[torch.Tensor] = []  # finished chains, draws × dim each
        self.current: list[torch.Tensor] = []
        self.evaluations, self.seconds = 0, 0.0
        self.chain: sampling.Chain | None = None
        self.transitions = 0  # of the current chain

    def potential(self, q: torch.Tensor) -> torch.Tensor:
        log_lik = self.path.log_likelihood(self.weights(q), "train", self.log_scale).sum()
        return -log_lik / self.config.temperature - self.log_prior(q)

    def _start(self) -> torch.Tensor:
        cfg = self.config
        gen = torch.Generator().manual_seed(self.seed * 100 + len(self.samples))
        if cfg.space in ("line", "lambda"):  # around the middle of the curve
            return 0.1 * torch.randn(self.dim, generator=gen)
        if cfg.space == "varphi":  # around the curve's own coordinates
            sub = sampling.Subspace.from_control_points(self.theta)
            middle = sub.coords(self.theta).mean(0)
            return middle + 0.1 * torch.randn(self.dim, generator=gen)
        return self.theta.mean(0) + 0.01 * torch.randn(self.dim, generator=gen)

    @property
    def done(self) -> bool:
        return len(self.samples) >= self.config.chains

    def step(self) -> dict[str, float]:
        cfg = self.config
        if self.done:  # all chains drawn: nothing more to do
            return {"train/potential": self._last}
        started = time.perf_counter()
        if self.chain is None:
            self.chain = sampling.Chain(self.potential, self._start(), cfg.warmup)
            self.transitions, self.current = 0, []
        q = self.chain.step()
        self.transitions += 1
        if self.transitions > cfg.warmup:
            self.current.append(q.detach().clone())
        if len(self.current) == cfg.draws:
            self.samples.append(torch.stack(self.current))
            self.evaluations += self.chain.evaluations
            self.chain = None
        self.seconds += time.perf_counter() - started
        with torch.no_grad():
            self._last = float(self.potential(q))
        return {"train/potential": self._last}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.done:
            return {"val/chains_done": float(len(self.samples))}
        draws = torch.stack(self.samples)  # chains × draws × dim
        flat = draws.reshape(-1, self.dim)
        log_lik = torch.stack(
            [self.path.log_likelihood(self.weights(q), "test", self.log_scale) for q in flat]
        )
        preds = torch.stack([self.path.predict(self.weights(q), "test") for q in flat])
        y = self.path.data["test"][1]
        metrics = sampling.diagnostics(draws, log_lik.reshape(*draws.shape[:2], -1))
        if self.path.classify:  # accuracy of the posterior predictive
            probs = preds.softmax(-1).mean(0)
            metrics["acc"] = float(probs.argmax(1).eq(y).float().mean())
        else:
            metrics["rmse"] = float((preds.mean(0).flatten() - y.flatten()).pow(2).mean().sqrt())
        metrics["grad_evals"] = float(self.evaluations)
        metrics["sample_seconds"] = self.seconds
        metrics["chains_done"] = float(len(self.samples))
        return {f"val/{k}": v for k, v in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        # Finished chains are kept; an unfinished chain restarts on resume (NUTS adaptation
        # state is not saved).
        return {
            "samples": list(self.samples),
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = list(state["samples"])
        self.evaluations, self.seconds = int(state["evaluations"]), float(state["seconds"])
        self.chain = None
        if self.samples:  # what step() reports once every chain is drawn
            with torch.no_grad():
                self._last = float(self.potential(self.samples[-1][-1]))

    def export(self) -> dict[str, Any]:
        return {"samples": torch.stack(self.samples) if self.samples else torch.empty(0)}


def _load_path(path: str) -> dict[str, Any]:
    expected = "the model/model.pt of a finished 'paths' run"
    return load_paths_model(path, "config.path_model", expected)
