"""Packed sweeps: grid points grouped into Tune trials that each train one vectorised model.

``make_packs`` lists every grid point of a spec (``{"config", "seed"}``), groups the points
whose configs may share a model (:func:`trainers.packing.pack_key`) and cuts each group into
packs of ``spec.pack`` points (``auto``: the grid spread evenly over the CPU or GPU slots). Each
pack is one Tune trial; :func:`run_pack_trial` opens one MLflow child run per point — its own
params, seed, metrics, model — as if it had run alone, and trains the packed trainer once.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from dynsweep.errors import TrialFailure
from orchestrator import space
from orchestrator.checkpoints import lineage
from orchestrator.context import (
    ContextBase,
    SweepSetup,
    TrialContext,
    TrialPoint,
    end_fatal_runs,
    open_runs,
    report_finished,
    resumable_state,
    run_name,
    train,
    trial_device,
)
from orchestrator.spec import ExperimentSpec
from tracking.sender import MetricSender
from tracking.trial_run import TrialRun, end_runs
from trainers import get_trainer_class
from trainers.distributed import Parallel
from trainers.packing import pack_key, packed_class

Point = dict[str, Any]  # {"config": {...}, "seed": int}


def grid_points(spec: ExperimentSpec) -> list[Point]:
    """Every point of a grid-only space, ``num_samples`` times, in Tune's order."""
    parsed = spec.parsed_space()
    dims = list(space.domains(parsed))
    points = []
    for _ in range(spec.num_samples):
        for values in itertools.product(*(d.values for _, d in dims)):
            chosen = {path: v for (path, _), v in zip(dims, values)}
            points.append(space.substitute(parsed, chosen))
    return points


def make_packs(spec: ExperimentSpec, slots: int, cap: int | None = None) -> list[list[Point]]:
    """The packs of a sweep: points that may share a model, at most ``spec.pack`` a pack, each
    group cut into packs of even size. ``auto`` on CPUs: about ``points / (2 slots)`` (two packs
    a slot let the scheduler even out packs of unequal cost); on GPUs: ``points / slots`` (one
    wide pack keeps a GPU busier than two narrow ones), at most ``cap`` (its memory's share,
    see :func:`orchestrator.plan.member_cap`)."""
    cls = get_trainer_class(spec.trainer)
    groups: dict[str, list[Point]] = {}
    for point in grid_points(spec):
        key = pack_key(cls, cls.Config.model_validate(point["config"]))
        groups.setdefault(key, []).append(point)
    total = sum(map(len, groups.values()))
    if spec.pack == "auto":
        per_slot = 1 if spec.resources.gpus > 0 else 2
        size = math.ceil(total / (per_slot * max(slots, 1)))
        size = min(size, cap) if cap else size
    else:
        size = spec.pack
    packs = []
    for group in groups.values():
        count = math.ceil(len(group) / size)
        per = math.ceil(len(group) / count)
        packs += [group[i : i + per] for i in range(0, len(group), per)]
    return packs


@dataclass
class PackContext(ContextBase):
    """The Context of a packed trial: members log and record into their own runs (``members``,
    one :class:`orchestrator.context.TrialContext` each, all logging through ``sender``); the
    pack reports to Tune and checkpoints (:class:`orchestrator.context.ContextBase`: Tune sees
    the mean over live members)."""

    member_contexts: list[TrialContext]
    sender: MetricSender
    uri: str
    workdir: Path
    data_dir: Path
    header: dict[str, Any]
    device: torch.device

    @property
    def members(self) -> list[TrialContext]:
        return self.member_contexts

    @property
    def seed(self) -> int:
        return self.member_contexts[0].seed

    @property
    def parallel(self) -> Parallel:
        return self.member_contexts[0].parallel

    @property
    def live(self) -> list[TrialContext]:
        return [m for m in self.member_contexts if not m.closed]

    def run_ids(self) -> str:
        return ",".join(m.header["run_id"] for m in self.member_contexts)

    def flush(self) -> None:
        self.sender.flush()

    def keep_final(self, step: int, export: list[dict]) -> None:
        # No learning-curve figure per member (``curves`` is not used): drawing ~0.4 s each
        # would undo what packing saves (256 points: ~100 s); the MLflow UI charts them.
        for member, state in zip(self.member_contexts, export):
            if not member.closed:
                member.keep_model(step, state)

    def _end_runs(self, status: str, error: str | None, tags: dict[str, str]) -> None:
        """Every live member's run, together (one transaction on a SQL store); then the pack's
        sender is closed."""
        try:
            live = self.live
            if live:
                self.sender.flush()
                end_runs(self.uri, {m.run.run_id: (status, error, tags) for m in live})
                for member in live:
                    member.closed = True
        finally:
            self.sender.close()
            self.closed = True

    def log_file(self, path: Path, artifact_path: str) -> None:
        for member in self.live:
            member.log_file(path, artifact_path)


def member_contexts(
    runs: list[TrialRun],
    points: list[TrialPoint],
    workdir: Path,
    data_dir: Path,
    device: torch.device,
) -> list[TrialContext]:
    """One context per member run. A run that had failed for good (``dynsweep.fatal``, ended
    again by :func:`orchestrator.context.end_fatal_runs`) is closed: the loop leaves it out."""
    return [
        TrialContext(
            run,
            p.seed,
            workdir / f"member{i}",
            data_dir,
            p.header(run.run_id),
            device,
            closed=run.fatal_error is not None,
        )
        for i, (run, p) in enumerate(zip(runs, points))
    ]


def run_pack_trial(setup: SweepSetup, points: list[Point]) -> None:
    """The Tune function's work for a packed trial: one run per point, one packed model; the
    same steps as :func:`orchestrator.trial.run_trial`."""
    spec = setup.spec
    cls = get_trainer_class(spec.trainer)
    configs = [cls.Config.model_validate(p["config"]) for p in points]
    trial_id = tune.get_context().get_trial_id()
    members = []
    for i, (point, config) in enumerate(zip(points, configs)):
        member_id = f"{trial_id}-{i:03d}"
        members.append(
            TrialPoint(
                member_id,
                run_name(spec, point, member_id),
                spec.trainer,
                config.model_dump(mode="json"),
                int(point["seed"]),
            )
        )
    sender = MetricSender(setup.uri)
    runs = open_runs(
        setup.uri, setup.experiment_id, setup.parent_run_id, members, setup.tags,
        pack_id=trial_id, sender=sender,
    )  # fmt: skip
    if all(run.final is not None for run in runs):  # finished before the driver died
        report_finished(*runs)
        sender.close()
        return
    try:  # members that failed for good stay FAILED and out of the loop
        end_fatal_runs(runs)
    except TrialFailure:
        sender.close()
        raise

    state = resumable_state(setup, trial_id, runs[0])
    device = trial_device(spec)
    workdir = Path(tempfile.mkdtemp(prefix=f"dynsweep-{trial_id}-"))
    data_dir = Path(setup.data_dir)
    contexts = member_contexts(runs, members, workdir, data_dir, device)
    header = {
        "trial_id": trial_id,
        "trainer": spec.trainer,
        "members": [c.header for c in contexts],
        "origins": lineage(state, trial_id),
    }
    resume = state["loop"] if state is not None else None
    ctx = PackContext(contexts, sender, setup.uri, workdir, data_dir, header, device)
    seeds = [m.seed for m in members]
    train(packed_class(cls)(configs, seeds), ctx, spec, resume, runs[0].attempt, setup.sweep_dir)
