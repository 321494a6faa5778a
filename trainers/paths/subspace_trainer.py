"""The ``subspace`` trainer: sample the posterior around a trained Bezier path.

Reads a ``paths`` run's final model (``path_model``: its ``model/model.pt``), builds the chosen
space around its curve (see :mod:`trainers.paths.sampling`) and samples
p(q | train) ∝ p(train | θ(q))^(1/T) p(q). Chains start as the original's (Dold et al.): on the
curve at t ~ U(0, 1) (subspace spaces) or from trained ensemble members (``fullspace``), with
the path's learnt noise scale. Samplers:

- ``nuts``: pyro's NUTS, the chains one after another, one transition per loop step
  (``warmup`` + ``draws`` each: ``stop.iterations`` ≥ ``chains × (warmup + draws)``);
- ``mclmc``: :mod:`trainers.paths.mclmc`, all chains vectorised, tuned on
  ``warmup × steps_per_draw`` steps (BlackJAX runs 30% of them), one draw per chain kept every
  ``steps_per_draw`` steps; a loop step runs ``steps_per_draw`` steps of every chain
  (``stop.iterations`` ≥ ``0.3 × warmup + 2 + draws``); it needs ≥ 2 dimensions (not
  ``line`` with a fixed σ or a classifier).

Per step: ``train/potential``. When every chain is done, evaluation reports the diagnostics of
:mod:`trainers.paths.diagnostics` (``val/rhat_max``, ``val/ess_bulk_min``, ``val/lppd``,
``val/elpd_loo`` …), ``val/rmse`` (regression) or ``val/acc`` (classification) of the
posterior predictive mean on the test split, ``val/grad_evals`` and ``val/sample_seconds``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from trainers.base import Context, Trainer, TrainerConfig
from trainers.local import LocalContext
from trainers.paths import sampling
from trainers.paths.diagnostics import diagnostics, lppd
from trainers.paths.mclmc import MCLMC
from trainers.paths.model import load_paths_model
from trainers.paths.posterior import Posterior
from trainers.paths.trainer import PathsConfig, PathsTrainer

# log σ ~ N(loc, scale²): the original's LogNormal(0, 1) prior on σ (LogNormal(−1, 0.1) in
# the full space) in the unconstrained coordinate log σ.
NOISE_PRIOR = {"subspace": (0.0, 1.0), "fullspace": (-1.0, 0.1)}


class SubspaceConfig(TrainerConfig):
    path_model: str = ""  # model/model.pt of a finished ``paths`` run
    space: Literal["line", "varphi", "lambda", "fullspace"] = "varphi"
    # scaled: φ in singular-value units (the original's S_K V_Kᵀ); orthonormal: V_Kᵀ.
    basis: Literal["scaled", "orthonormal"] = "scaled"
    tube_scale: float = Field(0.1, gt=0)  # lambda: the offset of a unit ξ, in φ units
    t_margin: float = Field(0.1, ge=0, lt=0.5)  # line, lambda: t ∈ (−margin, 1 + margin)
    temperature: float = Field(1.0, gt=0)
    prior_scale: float = Field(1.0, gt=0)  # φ (varphi), ξ (lambda), θ (fullspace)
    # Regression noise σ: sampled from the path's learnt value (the original's "homo", prior
    # on log σ: NOISE_PRIOR) or fixed at it.
    noise: Literal["sampled", "fixed"] = "sampled"
    sampler: Literal["nuts", "mclmc"] = "nuts"
    steps_per_draw: int = Field(50, ge=1)  # mclmc (the original's num_forward_passes // 2)
    integrator: Literal["mclachlan", "leapfrog"] = "mclachlan"  # mclmc
    # mclmc: the momentum refresh of BlackJAX 1.2.3 (split: ε/2 before and after the
    # deterministic step; the original's pin) or of BlackJAX <= 1.2.1 (after: ε once after it).
    refresh: Literal["split", "after"] = "split"
    # Chain starts. original: as the original hands them to BlackJAX, in numpyro's unconstrained
    # coordinates: line/lambda u ~ U(0, 1) is t's unconstrained value, t = lo + (hi − lo)
    # sigmoid(u) ∈ (0.5, 0.78), tube 0; the learnt σ is read as log σ (σ₀ = exp σ_learnt);
    # varphi starts on the curve at t ~ U(0, 1). curve: every space on the curve at
    # t ~ U(0, 1), σ₀ the learnt σ (this project's earlier starts).
    starts: Literal["original", "curve"] = "original"
    # line: q also carries K − 1 inert coordinates, as the original's state carries its unused
    # tube (they raise MCLMC's dimension and change its L tuning); false: q = (t) alone.
    line_inert: bool = True
    # The chains' seed: the trial's, or the path run's (path: one seed per cell, path and
    # chains, as the original's rng_seed; a stage over several paths then needs no seed grid).
    chain_seed: Literal["trial", "path"] = "trial"
    # fullspace chains start from trained ensemble members (the original) or on the path.
    fullspace_init: Literal["ensemble", "path"] = "ensemble"
    ensemble_steps: int = Field(1000, ge=0)  # Adam steps of each ensemble member
    chains: int = Field(2, ge=1)
    warmup: int = Field(200, ge=1)
    draws: int = Field(300, ge=2)


class SubspaceTrainer(Trainer):
    Config = SubspaceConfig
    config: SubspaceConfig
    # A pack: the temperatures of one path (and seeds), MCLMC's chains of every member as one
    # batch (trainers.paths.subspace_packed).
    pack_fields = ("temperature",)
    packed = "trainers.paths.subspace_packed:PackedSubspaceTrainer"

    @classmethod
    def prepare(cls, configs: list[SubspaceConfig], data_dir: Path) -> None:
        for c in configs:
            _load_path(c.path_model)  # a missing or wrong file fails before Ray starts

    def setup(self, ctx: Context) -> None:
        self.setup_member(ctx)
        mclmc = self.config.sampler == "mclmc"  # NUTS: one chain at a time
        temperature = self.theta.new_full(
            (self.config.chains if mclmc else 1,), self.config.temperature
        )
        self.posterior = self._posterior(temperature)
        self.mclmc = None
        if self.config.sampler == "mclmc":
            self.mclmc = self.make_mclmc(self.posterior, self.starts, self.seed)

    def setup_member(self, ctx: Context) -> None:
        """The path, its space, the chains' starts: everything but the sampler."""
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
        self.space = sampling.space(
            cfg.space, self.theta, cfg.prior_scale, cfg.tube_scale, cfg.basis, cfg.t_margin,
            cfg.line_inert,
        )  # fmt: skip
        self.sampled_noise = cfg.noise == "sampled" and not self.path.classify
        self.noise_prior = NOISE_PRIOR["fullspace" if cfg.space == "fullspace" else "subspace"]
        self.dim = self.space.dim + int(self.sampled_noise)
        self.seed = int(header["seed"]) if cfg.chain_seed == "path" else ctx.seed
        self.starts = self._starts()
        self.samples: list[torch.Tensor] = []  # finished chains, draws × dim each
        self.current: list[torch.Tensor] = []
        self.evaluations, self.seconds = 0, 0.0
        self.chain: sampling.Chain | None = None
        self.transitions = 0  # of the current NUTS chain

    def _posterior(self, temperature: torch.Tensor) -> Posterior:
        fixed = None if self.sampled_noise else self.log_scale
        return Posterior(self.path, self.space, temperature, fixed, self.noise_prior)

    def make_mclmc(self, posterior: Posterior, starts: torch.Tensor, seed) -> MCLMC:
        cfg = self.config
        tune = cfg.warmup * cfg.steps_per_draw
        return MCLMC(posterior, starts, tune, seed, integrator=cfg.integrator, refresh=cfg.refresh)

    def log_density(self, q: torch.Tensor) -> torch.Tensor:
        """log p(train | θ(q)) / T + log p(q), up to a constant, of one q."""
        return -self.potential(q)

    def potential(self, q: torch.Tensor) -> torch.Tensor:
        return -self.posterior.log_density(q[None])[0]

    def _starts(self) -> torch.Tensor:
        """chains × dim: the original's starts (see ``SubspaceConfig.starts``)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(self.seed * 100 + 7)
        ts = torch.rand(cfg.chains, generator=gen, dtype=torch.float64).tolist()
        log_scales = self.log_scale.expand(cfg.chains)
        original = cfg.starts == "original"
        if cfg.space == "fullspace" and cfg.fullspace_init == "ensemble":
            from trainers.paths.ensemble import train_ensemble

            starts, log_scales = train_ensemble(
                self.path, cfg.chains, cfg.ensemble_steps, self.seed
            )
        else:
            if original and cfg.space in ("line", "lambda"):  # u = t's unconstrained value
                lo, hi = -cfg.t_margin, 1 + cfg.t_margin
                ts = [lo + (hi - lo) / (1 + math.exp(-u)) for u in ts]
            starts = torch.stack([self.space.on_curve(t) for t in ts])
        if original:  # σ read as log σ
            log_scales = log_scales.exp()
        starts = starts.to(self.theta.device, self.theta.dtype)
        if self.sampled_noise:
            starts = torch.cat([starts, log_scales.to(starts)[:, None]], 1)
        return starts.detach()

    @property
    def done(self) -> bool:
        return len(self.samples) >= self.config.chains

    def step(self) -> dict[str, float]:
        if self.done:  # all chains drawn: nothing more to do
            return {"train/potential": self._last}
        started = time.perf_counter()
        if self.mclmc is not None:
            self._mclmc_step()
        else:
            self._nuts_step()
        self.seconds += time.perf_counter() - started
        return {"train/potential": self._last}

    def _nuts_step(self) -> None:
        cfg = self.config
        if self.chain is None:
            start = self.starts[len(self.samples)]
            self.chain = sampling.Chain(self.potential, start, cfg.warmup)
            self.transitions, self.current = 0, []
        q = self.chain.step()
        self.transitions += 1
        if self.transitions > cfg.warmup:
            self.current.append(q.detach().clone())
        if len(self.current) == cfg.draws:
            self.samples.append(torch.stack(self.current))
            self.evaluations += self.chain.evaluations
            self.chain = None
        with torch.no_grad():
            self._last = float(self.potential(q))

    def _mclmc_step(self) -> None:
        sampler, cfg = self.mclmc, self.config
        q = sampler.draw(cfg.steps_per_draw)
        if q is not None:
            self.current.append(q)
        if len(self.current) == cfg.draws:
            self.samples = list(torch.stack(self.current, 1))
            self.evaluations = sampler.evaluations
        self._last = float(-sampler.state["logdensity"].mean())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.done:
            return {"val/chains_done": float(len(self.samples))}
        draws = torch.stack(self.samples)  # chains × draws × dim
        metrics = self.posterior_metrics(draws)
        metrics["grad_evals"] = float(self.evaluations)
        metrics["grad_evals_per_draw"] = self.evaluations / math.prod(draws.shape[:2])
        metrics["sample_seconds"] = self.seconds
        metrics["chains_done"] = float(len(self.samples))
        return {f"val/{k}": v for k, v in metrics.items()}

    def posterior_metrics(self, draws: torch.Tensor, chunk: int = 1000) -> dict[str, float]:
        """Diagnostics, LPPD, PSIS-LOO and the predictive's RMSE (accuracy) of draws
        (chains × draws × dim), the networks evaluated ``chunk`` samples at a time."""
        flat = draws.reshape(-1, self.dim)
        x, log_scale = self.posterior.split(flat)
        phi = torch.cat([self.space.phi_batch(c) for c in x.split(chunk)])
        shape = draws.shape[:2]
        parts = {part: ([], []) for part in ("train", "val", "test")}  # pointwise, predictions
        for xs, ls in zip(x.split(chunk), log_scale.split(chunk)):
            weights = self.space.weights_batch(xs)
            for part, (pointwise, preds) in parts.items():
                inputs, targets = self.path.data[part]
                pointwise.append(self.posterior.pointwise(weights, ls, inputs, targets))
                if part != "train":
                    preds.append(self.posterior.outputs(weights, inputs))
        ll = {p: torch.cat(v[0]).reshape(*shape, -1) for p, v in parts.items()}
        group = {"varphi": phi}  # the original's posterior group, constrained
        if self.config.space in ("line", "lambda"):
            lo, hi = -self.config.t_margin, 1 + self.config.t_margin
            group["t"] = lo + (hi - lo) * torch.sigmoid(x[:, :1])
            if self.config.space == "lambda":
                group["tube"] = x[:, 1:]
        if self.sampled_noise:
            group["scale"] = log_scale.exp()
        group = {k: v.reshape(*shape, *v.shape[1:]) for k, v in group.items()}
        metrics = diagnostics(group, ll["train"], ll["test"], q=draws)
        metrics["lppd_val"] = float(lppd(ll["val"]).mean())  # the original's elpd_valid
        for part, suffix in (("test", ""), ("val", "_val")):
            preds, y = torch.cat(parts[part][1]), self.path.data[part][1]
            if self.path.classify:  # accuracy of the posterior predictive
                probs = preds.softmax(-1).mean(0)
                metrics["acc" + suffix] = float(probs.argmax(1).eq(y).float().mean())
            else:
                mean = preds.mean(0).flatten()
                metrics["rmse" + suffix] = float((mean - y.flatten()).pow(2).mean().sqrt())
        if self.sampled_noise:
            metrics["noise_scale"] = float(log_scale.exp().mean())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        # NUTS: finished chains are kept; an unfinished chain restarts on resume (its
        # adaptation state is not saved). MCLMC: the whole sampler state is saved.
        state = {
            "samples": list(self.samples),
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }
        if self.mclmc is not None:
            state.update(mclmc=self.mclmc.state_dict(), current=list(self.current))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = list(state["samples"])
        self.evaluations, self.seconds = int(state["evaluations"]), float(state["seconds"])
        self.chain = None
        if "mclmc" in state and self.mclmc is not None:
            self.mclmc.load_state_dict(state["mclmc"])
            self.current = list(state["current"])
            self._last = float(-self.mclmc.state["logdensity"].mean())
        elif self.samples:  # what step() reports once every chain is drawn
            with torch.no_grad():
                self._last = float(self.potential(self.samples[-1][-1]))

    def export(self) -> dict[str, Any]:
        return {"samples": torch.stack(self.samples) if self.samples else torch.empty(0)}


def _load_path(path: str) -> dict[str, Any]:
    expected = "the model/model.pt of a finished 'paths' run"
    return load_paths_model(path, "config.path_model", expected)
