"""The one training loop for every trainer.

The loop owns the iteration count, the report / eval / checkpoint / record cadences, NaN and
inf detection, and the stop rules. The trainer only does one step at a time.

Step numbering: step ``k`` is the state after ``k`` optimiser steps; metrics returned by the
``k``-th call of ``trainer.step()`` are logged at step ``k``, and recordings made at step ``k``
are taken after that update. Step 0 (the initial state) is recorded on a fresh start.

A packed trainer (:mod:`trainers.packing`) trains several grid points at once: each member's
values go to its own sink in ``ctx.members`` (metrics, recordings), a member whose metrics turn
non-finite is failed alone, and the scheduler sees the mean over the members still alive.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynsweep.errors import TrialFailure
from trainers.base import Context, FitResult, Trainer
from trainers.packing import member_rows
from trainers.recording import Every, Recorder, RecordSpec


class StopRule(BaseModel):
    """When a trial ends: after ``iterations`` steps, ``time_s`` seconds, or a metric threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    iterations: int = Field(200, ge=1)
    time_s: float | None = Field(None, gt=0)
    metric: str | None = None
    threshold: float | None = None
    mode: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _pair(self) -> StopRule:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("metric and threshold must be given together")
        return self


class LoopConfig(BaseModel):
    """Cadences of the loop, in steps (``'epoch'``: once per pass over the training data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    report_every: int = Field(10, ge=1)
    eval_every: Every = "epoch"
    checkpoint_every: int = Field(100, ge=1)
    record: tuple[RecordSpec, ...] = ()
    chunk_steps: int = Field(64, ge=1)
    compression: Literal["none", "lz4", "zstd"] = "none"
    record_budget_gb: float = Field(20.0, gt=0)  # refuse sweeps that would record more
    # figures/learning_curves.png per trial (drawn from the stored histories at its end,
    # ~0.4 s a trial on a slow CPU: turn off for sweeps of very many tiny trials)
    learning_curves: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> LoopConfig:
        names = [r.trajectory for r in self.record]
        if len(names) != len(set(names)):
            raise ValueError("two record entries write the same trajectory; give one a name")
        return self


def _due(step: int, every: Every, steps_per_epoch: int | None) -> bool:
    if every == "epoch":
        return steps_per_epoch is not None and step % steps_per_epoch == 0
    return step % every == 0


class _Members:
    """The members' metric rows, and which members are still alive."""

    def __init__(self, ctx: Context, count: int) -> None:
        if len(ctx.members) != count:
            raise ValueError(
                f"the trainer packs {count} members; the context has {len(ctx.members)}"
            )
        self.sinks, self.count = ctx.members, count
        self.dead: set[int] = set()

    @property
    def live(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.dead]

    def check(self, step: int, metrics: dict) -> list[dict[str, float]]:
        """Rows per member; a member with a non-finite value is failed (the trial, when it
        was the last one alive)."""
        rows = member_rows(metrics, self.count)
        for i in self.live:
            bad = {k: v for k, v in rows[i].items() if not math.isfinite(v)}
            if bad:
                shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
                message = f"non-finite metric at step {step}: {shown}"
                self.dead.add(i)
                if not self.live:
                    raise TrialFailure(message)
                self.sinks[i].fail(message)
        return rows

    def log(self, step: int, rows: list[dict[str, float]]) -> None:
        for i in self.live:
            self.sinks[i].log_metrics(step, rows[i])

    def summary(self, rows: list[dict[str, float]]) -> dict[str, float]:
        """What the scheduler sees: the row itself, or the mean over live members."""
        if self.count == 1:
            return rows[0]
        live = [rows[i] for i in self.live]
        out = {k: math.fsum(r[k] for r in live) / len(live) for k in live[0]}
        return {**out, "pack/live_members": float(len(live))}


def fit(
    trainer: Trainer,
    ctx: Context,
    loop: LoopConfig,
    stop: StopRule,
    resume: dict[str, Any] | None = None,
    attempt: int = 0,
) -> FitResult:
    """Train ``trainer`` until ``stop`` says so, reporting and checkpointing through ``ctx``.

    ``resume`` is a checkpoint this loop produced (``{"trainer", "step", "elapsed_s"}``); the
    trainer continues from it and recordings resume without gaps or duplicates.
    """
    trainer.setup(ctx)
    start, elapsed_before = 0, 0.0
    if resume is not None:
        trainer.load_state_dict(resume["trainer"])
        start, elapsed_before = int(resume["step"]), float(resume["elapsed_s"])
    members = _Members(ctx, trainer.members)
    recorders = [
        Recorder(
            sink.trajectory_dir,
            attempt=attempt,
            resumed_from=start if resume is not None else None,
            chunk_steps=loop.chunk_steps,
            compression=loop.compression,
            on_file=sink.on_trajectory_file,
        )
        for sink in ctx.members
    ]
    spe = trainer.steps_per_epoch
    columns: dict[str, dict] = {}
    t0 = time.monotonic()

    def record(step: int) -> None:
        for spec in loop.record:
            if step == 0 or _due(step, spec.every, spe):
                if spec.probe not in columns:
                    columns[spec.probe] = trainer.probe_columns(spec.probe)
                value = trainer.probe(spec.probe)
                for i in members.live:  # a packed probe has one row per member
                    recorders[i].record(
                        spec.trajectory,
                        step,
                        value if members.count == 1 else value[i],
                        columns[spec.probe],
                        spec,
                    )

    def checkpoint(step: int) -> dict[str, Any]:
        for recorder in recorders:  # every row up to this step is on disk before the checkpoint
            recorder.flush()
        elapsed = elapsed_before + time.monotonic() - t0
        return {"trainer": trainer.state_dict(), "step": step, "elapsed_s": elapsed}

    try:
        # Evaluate the starting state, so every report carries the eval metrics (schedulers
        # compare trials on them) and step 0 of a fresh run has its baseline.
        rows = members.check(start, trainer.evaluate())
        members.log(start, rows)
        metrics = members.summary(rows)
        if resume is None:
            record(0)
        step, reason = start, None
        while step < stop.iterations:
            step += 1
            rows = members.check(step, trainer.step())
            record(step)
            if _due(step, loop.eval_every, spe) or step == stop.iterations:
                for row, extra in zip(rows, members.check(step, trainer.evaluate())):
                    row.update(extra)
            members.log(step, rows)
            metrics = members.summary(rows)
            reason = _stop_reason(stop, metrics, elapsed_before + time.monotonic() - t0)
            if reason is not None or step == stop.iterations:
                break
            if step % loop.checkpoint_every == 0:
                ctx.report(step, metrics, checkpoint(step))
            elif step % loop.report_every == 0:
                ctx.report(step, metrics, None)
        result = FitResult(step=step, metrics=metrics, stop_reason=reason or "iterations")
        if ctx.parallel.chief:
            folder = ctx.workdir / "artifacts"
            folder.mkdir(parents=True, exist_ok=True)
            for path in trainer.write_artifacts(folder):
                ctx.log_file(path, "figures")
        ctx.finish(result, checkpoint(step), trainer.export())
        return result
    finally:
        for recorder in recorders:
            recorder.close()


def _stop_reason(stop: StopRule, metrics: dict[str, float], elapsed: float) -> str | None:
    """Why training must stop now (``time``, ``metric``), or ``None`` to keep going."""
    if stop.time_s is not None and elapsed >= stop.time_s:
        return "time"
    if stop.metric is not None and stop.metric in metrics:
        value = metrics[stop.metric]
        if value >= stop.threshold if stop.mode == "max" else value <= stop.threshold:
            return "metric"
    return None
