"""The one training loop for every trainer.

The loop owns the iteration count, the report / eval / checkpoint / record cadences, NaN and
inf detection, and the stop rules. The trainer only does one step at a time.

Step numbering: step ``k`` is the state after ``k`` optimiser steps; metrics returned by the
``k``-th call of ``trainer.step()`` are logged at step ``k``, and recordings made at step ``k``
are taken after that update. Step 0 (the initial state) is recorded on a fresh start.

A packed trainer (:mod:`trainers.packing`) trains several grid points at once: each member's
values go to its own sink in ``ctx.members`` (metrics, recordings), a member whose metrics turn
non-finite is failed alone, and the scheduler sees the mean over the members still alive.

Metric values may be floats or tensors (0-d, or 1-d with one value per member of a packed
trainer). Floats are checked and logged at once. Tensors stay on the device until a value is
needed: a report or checkpoint (every ``report_every`` steps), a metric stop rule whose metric
is in that step's row (then every such step), the last step, an exception out of the trainer.
All waiting steps are then copied to the host in one transfer (one per device and dtype; CPU
tensors are simply read) and logged step by step, with their own step numbers, as if logged
at once. On a GPU this removes a host-device sync per step. The price: a non-finite value is
found up to ``report_every`` steps late (at most ``MAX_PENDING``). The trial (or the member)
still fails with the first bad step's message, every finite step before it is logged, and the
recordings made from that step on are discarded
(:meth:`trainers.recording.Recorder.discard_from`), so what is kept equals an immediate check;
only the extra steps' compute is lost.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynsweep.errors import TrialFailure
from trainers.base import Context, FitResult, Trainer
from trainers.packing import member_rows
from trainers.recording import Every, Recorder, RecordSpec

MAX_PENDING = 1000  # steps whose tensor metrics may wait on the device, whatever report_every


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
        # members not failed, in order (a retried pack's member that failed for good is out)
        self.live = [i for i, sink in enumerate(self.sinks) if not getattr(sink, "closed", False)]
        if not self.live:
            raise TrialFailure("every member of this pack has failed already")
        self.recorders: list[Recorder] = []

    def check(self, step: int, metrics: dict, cut: int) -> list[dict[str, float]]:
        """Rows per member; a member with a non-finite value is failed (the trial, when it
        was the last one alive) and its recordings from step ``cut`` on are discarded (none
        exist unless the check comes late)."""
        rows = member_rows(metrics, self.count)
        for i in self.live:
            bad = {k: v for k, v in rows[i].items() if not math.isfinite(v)}
            if bad:
                shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
                message = f"non-finite metric at step {step}: {shown}"
                self.live = [j for j in self.live if j != i]
                if self.recorders:
                    self.recorders[i].discard_from(cut)
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
    recorders = members.recorders = [
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
    # Steps whose metrics are still tensors on the device: [step, step() metrics, evaluate()
    # metrics or None], settled (copied, checked, logged) when a value is needed.
    pending: list[list] = []
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

    def settle() -> list[dict[str, float]]:
        """Check and log every pending step in order (one transfer); the last step's rows."""
        entries = pending[:]
        pending.clear()
        fetched = host_values([m for _, train, ev in entries for m in (train, ev or {})])
        for n, (step, _, ev) in enumerate(entries):
            train, extra = fetched[2 * n], fetched[2 * n + 1]
            rows = members.check(step, train, cut=step)  # no recording of a bad step
            if ev is not None:  # evaluated after the step's recording: that row stays
                for row, values in zip(rows, members.check(step, extra, cut=step + 1)):
                    row.update(values)
            members.log(step, rows)
        return rows

    def checkpoint(step: int) -> dict[str, Any]:
        for recorder in recorders:  # every row up to this step is on disk before the checkpoint
            recorder.flush()
        elapsed = elapsed_before + time.monotonic() - t0
        return {"trainer": trainer.state_dict(), "step": step, "elapsed_s": elapsed}

    try:
        # Evaluate the starting state, so every report carries the eval metrics (schedulers
        # compare trials on them) and step 0 of a fresh run has its baseline.
        rows = members.check(start, trainer.evaluate(), cut=start + 1)
        members.log(start, rows)
        metrics = members.summary(rows)
        if resume is None:
            record(0)
        step, reason = start, None
        try:
            while step < stop.iterations:
                step += 1
                train = trainer.step()
                deferred = bool(pending) or _holds_tensors(train)
                if deferred:
                    pending.append([step, train, None])
                else:  # floats: checked before anything is recorded at this step
                    rows = members.check(step, train, cut=step)
                record(step)
                if _due(step, loop.eval_every, spe) or step == stop.iterations:
                    extra = trainer.evaluate()
                    if deferred:
                        pending[-1][2] = extra
                    else:
                        for row, values in zip(rows, members.check(step, extra, cut=step + 1)):
                            row.update(values)
                elapsed = elapsed_before + time.monotonic() - t0
                time_up = stop.time_s is not None and elapsed >= stop.time_s
                due = step % loop.checkpoint_every == 0 or step % loop.report_every == 0
                if deferred:
                    needed = time_up or due or step == stop.iterations
                    if not (needed or len(pending) >= MAX_PENDING or _wants(stop, pending[-1])):
                        continue
                    rows = settle()
                else:
                    members.log(step, rows)
                metrics = members.summary(rows)
                reason = "time" if time_up else _metric_reached(stop, metrics)
                if reason is not None or step == stop.iterations:
                    break
                if step % loop.checkpoint_every == 0:
                    ctx.report(step, metrics, checkpoint(step))
                elif step % loop.report_every == 0:
                    ctx.report(step, metrics, None)
        except Exception as exc:
            if pending and not isinstance(exc, TrialFailure):
                _settle_after(settle, exc)  # log the steps done, or fail at an earlier NaN
            raise
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


def _holds_tensors(metrics: dict) -> bool:
    return any(isinstance(v, torch.Tensor) for v in metrics.values())


def _wants(stop: StopRule, entry: list) -> bool:
    """Whether the metric stop rule needs this pending step's values now (its metric is in
    the step's row, or is the pack's live-member count)."""
    if stop.metric is None:
        return False
    _, train, ev = entry
    return stop.metric in train or stop.metric in (ev or ()) or stop.metric == "pack/live_members"


def _settle_after(settle, exc: Exception) -> None:
    """The trainer raised with steps pending: log them (a non-finite one among them is the
    first failure and is raised, chained to ``exc``); a second error while copying (a broken
    device) is dropped in favour of ``exc``."""
    try:
        settle()
    except TrialFailure as failure:
        raise failure from exc
    except Exception:
        pass


def host_values(dicts: list[dict]) -> list[dict]:
    """``dicts`` with every tensor value replaced by its host value: a 0-d tensor by a number,
    a 1-d one by a list. Tensors on a device are copied in one transfer per device and dtype;
    CPU tensors are read directly (stacking them would cost more than it saves)."""
    out: list[dict] = []
    remote: dict[tuple, list[tuple[int, str, torch.Tensor]]] = {}
    for i, d in enumerate(dicts):
        row = {}
        for k, v in d.items():
            if isinstance(v, torch.Tensor):
                if v.is_cpu:
                    v = v.tolist()  # a number for a 0-d tensor
                else:
                    remote.setdefault((v.device, v.dtype), []).append((i, k, v))
            row[k] = v
        out.append(row)
    with torch.no_grad():
        for items in remote.values():
            tensors = [v for _, _, v in items]
            if all(t.dim() == 0 for t in tensors):
                values = torch.stack(tensors).tolist()
            else:
                flat = torch.cat([t.reshape(-1) for t in tensors]).tolist()
                values, pos = [], 0
                for t in tensors:
                    n = t.numel()
                    values.append(flat[pos] if t.dim() == 0 else flat[pos : pos + n])
                    pos += n
            for (i, k, _), value in zip(items, values):
                out[i][k] = value
    return out


def _metric_reached(stop: StopRule, metrics: dict[str, float]) -> str | None:
    """``"metric"`` when the stop rule's metric crossed its threshold, else ``None``."""
    if stop.metric is not None and stop.metric in metrics:
        value = metrics[stop.metric]
        if value >= stop.threshold if stop.mode == "max" else value <= stop.threshold:
            return "metric"
    return None
