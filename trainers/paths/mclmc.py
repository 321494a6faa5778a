"""Microcanonical Langevin Monte Carlo (MCLMC; Robnik et al. 2023), chains vectorised.

A PyTorch port of BlackJAX's ``mclmc`` kernel and ``mclmc_find_L_and_step_size`` (BlackJAX
1.2, without diagonal preconditioning: the original's setting). Every tensor has a leading
chain dimension and each chain tunes its own L and step size (the original vmaps the tuner).

- Dynamics: the isokinetic (ESH) momentum update u ← normalise(e(1 − ζ)(1 + ζ + u·e(1 − ζ))
  + 2ζu), e = ∇log p / ‖∇log p‖, δ = ε b ‖∇log p‖ / (d − 1), ζ = e^(−δ), alternating with
  position updates x ← x + ε a u; the coefficients (b₁, a₁, b₂, a₁, b₁) of the minimal-norm
  (McLachlan) integrator, or (½, 1, ½) for leapfrog. Partial momentum refreshes
  u ← normalise(u + ν z), ν = √((e^(2ε′/L) − 1) / d): ``refresh: split`` (BlackJAX 1.2.3, the
  original's pin; ``with_isokinetic_maruyama``) refreshes with ε′ = ε/2 before the
  deterministic step and again after it; ``refresh: after`` (BlackJAX ≤ 1.2.1) once after it,
  with ε′ = ε.
- Tuning, on ``tune_steps`` (the number of steps that will be run; fractions 0.1, 0.1, 0.1):
  (1) n₁ + n₂ steps adapting ε so that Var[ΔE]/d ≈ 5e-4 (a weighted running estimate using
  Var[ΔE] ∝ ε⁶, never above a step size where the chain diverged); L = √(Σ Var[x]) from the
  last n₂ of them (weighted by ε); (2) n₃ steps, then L = 0.4 ε mean_i(n₃ / ESS_i).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

LogDensity = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # C×d ↦ (C, C×d)

B1 = 0.1931833275037836
INTEGRATORS = {"mclachlan": (B1, 0.5, 1 - 2 * B1, 0.5, B1), "leapfrog": (0.5, 1.0, 0.5)}
FIELDS = ("position", "momentum", "logdensity", "grad")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-13, x / norm.clamp_min(1e-300), x)


def momentum_update(u, g, step_size, coef):
    """ESH momentum update of unit momenta u by gradients g (C×d; step_size: C): (u, ΔK)."""
    d = u.shape[-1]
    g_norm = g.norm(dim=-1)
    e = _normalise(g)
    ue = (u * e).sum(-1)
    delta = step_size * coef * g_norm / (d - 1)
    zeta = torch.exp(-delta)
    raw = e * ((1 - zeta) * (1 + zeta + ue * (1 - zeta)))[:, None] + 2 * zeta[:, None] * u
    kinetic = (delta - math.log(2) + torch.log(1 + ue + (1 - ue) * zeta**2)) * (d - 1)
    return _normalise(raw), kinetic


def integrate(state: dict, step_size, log_density: LogDensity, coefficients) -> tuple[dict, Any]:
    """One isokinetic integrator step: (new state, kinetic energy change), C each."""
    x, u, g = state["position"], state["momentum"], state["grad"]
    kinetic, logp = torch.zeros_like(step_size), state["logdensity"]
    for i, c in enumerate(coefficients):
        if i % 2 == 0:
            u, dk = momentum_update(u, g, step_size, c)
            kinetic = kinetic + dk
        else:
            x = x + (step_size * c)[:, None] * u
            logp, g = log_density(x)
    return {"position": x, "momentum": u, "logdensity": logp, "grad": g}, kinetic


def refresh(u, step_size, L, z: torch.Tensor):
    """Partial momentum refresh with decoherence length L by standard normal draws z (C×d)."""
    nu = torch.sqrt((torch.exp(2 * step_size / L) - 1) / u.shape[-1])
    return _normalise(u + nu[:, None] * z)


def effective_sample_size(x: torch.Tensor) -> torch.Tensor:
    """ESS of each chain and dimension from that chain alone (x: C×n×d): BlackJAX's
    ``effective_sample_size`` with one chain (FFT autocovariance; Geyer's initial positive
    sequence with Stan's extra even lag, then the initial monotone sequence): C×d."""
    n = x.shape[1]
    centred = x - x.mean(1, keepdim=True)
    f = torch.fft.rfft(centred, n=2 * n, dim=1)
    acov = torch.fft.irfft(f * f.conj(), n=2 * n, dim=1)[:, :n] / n
    var0 = acov[:, :1] * n / (n - 1)
    rho = 1 - (var0 - acov) / (var0 * (n - 1) / n).clamp_min(1e-300)
    rho[:, 0] = 1.0
    even = n - n % 2
    rho_even = rho[:, 0:even:2]
    pairs = rho_even + rho[:, 1:even:2]
    positive = torch.cumprod((pairs > 0).to(x.dtype), 1)
    kept = torch.where(positive > 0, pairs, torch.zeros_like(pairs))
    monotone = torch.cummin(kept, 1).values * positive
    m = positive.sum(1).long()  # positive pairs: Stan adds the next even lag if positive
    nxt = rho_even.gather(1, m.clamp(max=rho_even.shape[1] - 1)[:, None]).squeeze(1)
    extra = torch.where(m < rho_even.shape[1], nxt.clamp_min(0), torch.zeros_like(nxt))
    tau = (-1 + 2 * monotone.sum(1) + extra).clamp_min(1 / math.log10(max(n, 2)))
    return n / tau


class MCLMC:
    """C chains of MCLMC from ``start`` (C×d): :meth:`step` advances every chain one
    transition, tuning for the first ``tune_steps`` ones (:attr:`tuning` until done).

    ``seed``: one seed for every chain, or a list of seeds, one per equal group of chains (the
    members of a packed trial: each group draws from its own generator exactly what it would
    draw alone)."""

    def __init__(
        self,
        log_density: LogDensity,
        start: torch.Tensor,
        tune_steps: int,
        seed: int | list[int] = 0,
        integrator: str = "mclachlan",
        refresh: str = "split",
        fractions: tuple[float, float, float] = (0.1, 0.1, 0.1),
        desired_energy_var: float = 5e-4,
        trust_in_estimate: float = 1.5,
        num_effective_samples: int = 150,
    ) -> None:
        chains, d = start.shape
        if d < 2:
            raise ValueError("MCLMC needs at least 2 dimensions (isokinetic momenta on a sphere)")
        if refresh not in ("split", "after"):
            raise ValueError(f"refresh: expected 'split' or 'after', got {refresh!r}")
        self.log_density, self.coefficients = log_density, INTEGRATORS[integrator]
        self.split_refresh = refresh == "split"
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if chains % len(seeds):
            raise ValueError(f"{chains} chains do not split into {len(seeds)} equal groups")
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.n1 = int(tune_steps * fractions[0]) + 1
        self.n2 = int(tune_steps * fractions[1]) + 1
        self.n3 = int(tune_steps * fractions[2])
        self.desired, self.trust = desired_energy_var, trust_in_estimate
        self.decay = (num_effective_samples - 1.0) / (num_effective_samples + 1.0)
        logp, grad = log_density(start)
        self.dtype, self.device = start.dtype, start.device
        self.state = {
            "position": start.clone(),
            "momentum": _normalise(self._noise(start.shape)),
            "logdensity": logp,
            "grad": grad,
        }
        one = torch.ones(chains, dtype=start.dtype, device=start.device)
        self.L, self.step_size = math.sqrt(d) * one, 0.25 * math.sqrt(d) * one
        # adaptation: weighted time, weighted ξ/ε⁶, the largest safe ε, weighted x and x²
        self.adapt = {
            "time": 0 * one,
            "x_average": 0 * one,
            "step_size_max": math.inf * one,
            "weight": 0 * one,
            "moments": torch.zeros(chains, 2, d, dtype=start.dtype, device=start.device),
        }
        self.trace: list[torch.Tensor] = []  # phase 3 positions
        self.steps = 0
        self.evaluations = chains  # gradient evaluations, all chains together

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        """Standard normal draws, C×d: each group of chains from its own generator."""
        rows = shape[0] // len(self.generators)
        z = [
            torch.randn((rows, *shape[1:]), generator=g, dtype=self.dtype) for g in self.generators
        ]
        return torch.cat(z).to(self.device)

    @property
    def tuning(self) -> bool:
        return self.steps < self.n1 + self.n2 + self.n3

    def transition(self) -> tuple[dict, torch.Tensor]:
        """One kernel step of every chain: (new state, energy change ΔK − Δlog p)."""
        state, eps = self.state, self.step_size
        if self.split_refresh:
            eps = eps / 2
            u = refresh(state["momentum"], eps, self.L, self._noise(state["momentum"].shape))
            state = {**state, "momentum": u}
        new, kinetic = integrate(state, self.step_size, self.log_density, self.coefficients)
        self.evaluations += len(self.step_size) * (len(self.coefficients) // 2)
        new["momentum"] = refresh(new["momentum"], eps, self.L, self._noise(new["momentum"].shape))
        return new, kinetic - new["logdensity"] + self.state["logdensity"]

    def step(self) -> torch.Tensor:
        """Advance every chain one transition; the positions, C×d."""
        new, energy_change = self.transition()
        self.energy_change = energy_change  # of the last step, C (a diagnostic)
        if self.steps < self.n1 + self.n2:
            self._adapt_step_size(new, energy_change, masked=self.steps < self.n1)
        else:
            self.state = new
            if self.tuning:
                self.trace.append(new["position"].clone())
                if len(self.trace) == self.n3:
                    self._adapt_L()
        self.steps += 1
        if self.steps == self.n1 + self.n2:  # L from the posterior's size
            m = self.adapt["moments"]
            variances = m[:, 1] - m[:, 0] ** 2
            self.L = torch.where(self.adapt["weight"] > 0, variances.sum(1).sqrt(), self.L)
        return self.state["position"]

    def draw(self, steps: int) -> torch.Tensor | None:
        """One draw of every chain: ``steps`` transitions, then the positions (C×d). While
        tuning, only the tuning steps left among those ``steps`` run, and there is no draw."""
        if self.tuning:
            for _ in range(steps):
                if self.tuning:
                    self.step()
            return None
        for _ in range(steps):
            x = self.step()
        return x.clone()

    def _adapt_step_size(self, new: dict, energy_change: torch.Tensor, masked: bool) -> None:
        a, eps = self.adapt, self.step_size
        finite = torch.isfinite(new["position"]).all(1) & torch.isfinite(new["logdensity"])
        for k in FIELDS:  # a chain that diverged stays where it was
            keep = finite.reshape(-1, *[1] * (new[k].dim() - 1))
            self.state[k] = torch.where(keep, torch.nan_to_num(new[k]), self.state[k])
        a["step_size_max"] = torch.where(finite, a["step_size_max"], 0.8 * eps)
        energy_change = torch.where(finite, torch.nan_to_num(energy_change), 0 * energy_change)
        d = new["position"].shape[1]
        xi = energy_change**2 / (d * self.desired) + 1e-8
        weight = torch.exp(-0.5 * (torch.log(xi) / (6.0 * self.trust)) ** 2)
        a["x_average"] = self.decay * a["x_average"] + weight * (xi / eps**6)
        a["time"] = self.decay * a["time"] + weight
        self.step_size = torch.minimum(
            (a["x_average"] / a["time"]) ** (-1.0 / 6.0), a["step_size_max"]
        )
        if not masked:  # running weighted moments of x over the last n₂ steps
            x = self.state["position"]
            w = finite.to(x.dtype) * self.step_size
            total = a["weight"] + w
            now = torch.stack([x, x**2], 1)
            safe = total.clamp_min(1e-300)[:, None, None]
            a["moments"] = (
                a["weight"][:, None, None] * a["moments"] + w[:, None, None] * now
            ) / safe
            a["weight"] = total

    def _adapt_L(self) -> None:
        if self.n3 >= 2:
            ess = effective_sample_size(torch.stack(self.trace, 1))
            self.L = 0.4 * self.step_size * (self.n3 / ess).mean(1)
        self.trace = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": dict(self.state),
            "L": self.L,
            "step_size": self.step_size,
            "adapt": dict(self.adapt),
            "trace": list(self.trace),
            "steps": self.steps,
            "evaluations": self.evaluations,
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state, self.adapt = dict(state["state"]), dict(state["adapt"])
        self.L, self.step_size = state["L"], state["step_size"]
        self.trace, self.steps = list(state["trace"]), int(state["steps"])
        self.evaluations = int(state["evaluations"])
        for g, saved in zip(self.generators, state["generators"], strict=True):
            g.set_state(saved)


def sample(
    log_density: LogDensity,
    start: torch.Tensor,
    tune_steps: int,
    draws: int,
    thinning: int = 1,
    seed: int = 0,
    integrator: str = "mclachlan",
    refresh: str = "split",
) -> torch.Tensor:
    """chains × draws × d MCLMC samples (every ``thinning``-th step after tuning)."""
    sampler = MCLMC(log_density, start, tune_steps, seed, integrator, refresh=refresh)
    while sampler.tuning:
        sampler.step()
    out = []
    for _ in range(draws):
        for _ in range(thinning):
            x = sampler.step()
        out.append(x.clone())
    return torch.stack(out, 1)
