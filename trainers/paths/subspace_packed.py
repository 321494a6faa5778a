"""The packed form of the ``subspace`` trainer: the temperatures of one path as one batch.

Members share the path and every sampling setting except ``temperature`` (and the seed). Each
member is set up as the unpacked trainer sets itself up (its path, space and chain starts);
then one :class:`~trainers.paths.mclmc.MCLMC` runs every member's chains together, chains ×
members rows, each row with its member's temperature in the batched log density
(:class:`~trainers.paths.posterior.Posterior`) and each member's group of chains drawing its
momentum noise from the generator the unpacked trainer would use: a member's draws equal the
unpacked run's (tested in float64). When every chain is done, each member's draws are
evaluated as the unpacked trainer evaluates them and reported to that member's own run.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from trainers.base import Context, Trainer
from trainers.packing import pack_key
from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer


class PackedSubspaceTrainer(Trainer):
    Config = SubspaceConfig
    config: SubspaceConfig

    def __init__(self, configs: list[SubspaceConfig], seeds: list[int]) -> None:
        if len({pack_key(SubspaceTrainer, c) for c in configs}) != 1:
            raise ValueError(
                "a pack's configs may differ only in " + ", ".join(SubspaceTrainer.pack_fields)
            )
        if configs[0].sampler != "mclmc":
            raise ValueError("sampler: only mclmc packs (NUTS runs one chain at a time)")
        super().__init__(configs[0])
        self.configs, self.seeds = list(configs), list(seeds)
        self.pack_size = len(configs)

    def setup(self, ctx: Context) -> None:
        self.parts = []
        for config, seed in zip(self.configs, self.seeds):
            part = SubspaceTrainer(config)
            part.setup_member(_member_context(ctx, seed))
            self.parts.append(part)
        first, chains = self.parts[0], self.config.chains
        temperature = torch.cat(
            [first.theta.new_full((chains,), c.temperature) for c in self.configs]
        )
        self.posterior = first._posterior(temperature)
        for part in self.parts:  # evaluation: each member's own (untempered) likelihood
            part.posterior = self.posterior
        starts = torch.cat([p.starts for p in self.parts])
        self.mclmc = first.make_mclmc(self.posterior, starts, [p.seed for p in self.parts])
        self.current: list[torch.Tensor] = []
        self.seconds = 0.0
        self._last = [0.0] * self.pack_size

    @property
    def done(self) -> bool:
        return bool(self.parts[0].samples)

    def step(self) -> dict[str, list[float]]:
        cfg, sampler = self.config, self.mclmc
        if not self.done:
            started = time.perf_counter()
            q = sampler.draw(cfg.steps_per_draw)
            if q is not None:
                self.current.append(q)
            self.seconds += time.perf_counter() - started
            if len(self.current) == cfg.draws:
                self._finish()
            logp = -sampler.state["logdensity"].reshape(self.pack_size, -1).mean(1)
            self._last = logp.tolist()
        return {"train/potential": list(self._last)}

    def _finish(self) -> None:
        draws = torch.stack(self.current, 1).reshape(
            self.pack_size, self.config.chains, -1, self.parts[0].dim
        )
        per_member = self.mclmc.evaluations // self.pack_size
        for part, member_draws in zip(self.parts, draws):
            part.samples = list(member_draws)
            part.evaluations, part.seconds = per_member, self.seconds / self.pack_size
        self.current = []

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        if not self.done:
            return {"val/chains_done": [0.0] * self.pack_size}
        rows = [part.evaluate() for part in self.parts]
        return {k: [row[k] for row in rows] for k in rows[0]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "mclmc": self.mclmc.state_dict(),
            "current": list(self.current),
            "seconds": self.seconds,
            "samples": [list(p.samples) for p in self.parts],
            "evaluations": [p.evaluations for p in self.parts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mclmc.load_state_dict(state["mclmc"])
        self.current, self.seconds = list(state["current"]), float(state["seconds"])
        for part, samples, evaluations in zip(self.parts, state["samples"], state["evaluations"]):
            part.samples, part.evaluations = list(samples), int(evaluations)
            part.seconds = self.seconds / self.pack_size
        logp = -self.mclmc.state["logdensity"].reshape(self.pack_size, -1).mean(1)
        self._last = logp.tolist()

    def export(self) -> list[dict[str, Any]]:
        """One export per member, as :meth:`SubspaceTrainer.export` writes it."""
        return [part.export() for part in self.parts]


def _member_context(ctx: Context, seed: int) -> Context:
    """The context a member's unpacked trainer would get: ``ctx`` with the member's seed."""
    from trainers.local import LocalContext

    return LocalContext(ctx.workdir, seed=seed, device=ctx.device, data_dir=ctx.data_dir)
