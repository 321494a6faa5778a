"""The recording size guard: estimate what a sweep would record and refuse it over budget.

bytes = Σ over record entries of (recorded steps × values per step × bytes per value), for the
largest trial of the space, times the number of trials. Checked when the spec is loaded, so a
sweep that would fill the disk is refused before Ray starts.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import TYPE_CHECKING

from dynsweep.errors import ConfigError
from orchestrator import space
from trainers import get_trainer_class

if TYPE_CHECKING:
    from orchestrator.spec import ExperimentSpec

BYTES = {"float32": 4, "float16": 2}


def _per_trial(spec: ExperimentSpec, cls, config) -> dict[str, int]:
    sizes = cls.probe_sizes(config)
    spe = cls.estimated_steps_per_epoch(config) or 1
    out = {}
    for rec in spec.loop.record:
        labels = sizes.get(rec.probe)
        if not labels:
            continue
        if rec.project:
            width = rec.project
        elif rec.select:
            width = sum(n for lbl, n in labels.items() if any(fnmatch(lbl, p) for p in rec.select))
        else:
            width = sum(labels.values())
        every = spe if rec.every == "epoch" else rec.every
        rows = spec.stop.iterations // every + 1
        out[rec.trajectory] = rows * width * BYTES[rec.dtype]
    return out


def estimate(spec: ExperimentSpec) -> tuple[dict[str, int], int]:
    """(bytes per trajectory for the largest trial, total bytes for the whole sweep)."""
    if not spec.loop.record:
        return {}, 0
    cls = get_trainer_class(spec.trainer)
    largest: dict[str, int] = {}
    for _, value in space.variants(spec.parsed_space()["config"]):
        per = _per_trial(spec, cls, cls.Config.model_validate(value))
        if sum(per.values()) > sum(largest.values()):
            largest = per
    return largest, sum(largest.values()) * spec.num_trials()


def check(spec: ExperimentSpec) -> None:
    per_trial, total = estimate(spec)
    budget = spec.loop.record_budget_gb * 1e9
    if total <= budget:
        return
    parts = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in per_trial.items())
    raise ConfigError(
        f"loop.record: this sweep would record about {total / 1e9:.1f} GB "
        f"({spec.num_trials()} trials × {sum(per_trial.values()) / 1e9:.2f} GB: {parts}), over "
        f"loop.record_budget_gb = {spec.loop.record_budget_gb:g}. Shrink it with dtype: float16 "
        "(half), every: k (1/k), project: d (a seeded random projection to d values), "
        "select: [layer patterns] (only some layers), fewer steps — or raise the budget."
    )
