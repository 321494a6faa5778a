"""The trial kit: what every way of running a trial shares (Tune, packed, Ray Train, MPI).

- :class:`SweepSetup`: what every trial of a sweep needs, saved as the sweep's manifest.
- :class:`TrialPoint` and :func:`open_runs`: the one way a trial's MLflow run is opened, or
  found again and continued (a retry, a resumed sweep, a distributed rank 0, a packed member).
- :class:`ContextBase`: what every trial's :class:`trainers.base.Context` shares — the one
  report path (the latest metrics, the sweep's metrics as NaN until known, a flush before a
  checkpoint, the checkpoint file, the send), ``finish`` (keep, end FINISHED, last report) and
  the state :func:`train` sets. :class:`TrialContext` is the plain trial's (its MLflow run,
  also its own single member); :class:`orchestrator.packing.PackContext` a packed trial's.
- :func:`train` (the loop, with the run's status on every exit path), :func:`end_fatal_runs`
  (retries of a failure that retrying cannot fix), :func:`report_finished` and
  :func:`resumable_state` (resume from the newest checkpoint).

The dispatcher that picks the plain, packed or distributed path is :mod:`orchestrator.trial`.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

import tracking
from dynsweep.errors import DataError, TrialFailure
from orchestrator import space
from orchestrator.checkpoints import checkpoint_state, resume_state, state_file
from orchestrator.spec import ExperimentSpec
from orchestrator.storage import unreachable
from tracking import tags as tag
from tracking.sender import MetricSender
from tracking.trial_run import RunSpec, TrialRun, find_or_create_runs
from trainers.base import FitResult
from trainers.distributed import Parallel
from trainers.loop import fit


@dataclass(frozen=True)
class SweepSetup:
    """What every trial of a sweep needs; saved beside the Tune experiment for ``resume``."""

    spec: ExperimentSpec
    uri: str
    experiment_id: str
    parent_run_id: str
    data_dir: str
    tags: dict[str, str] = field(default_factory=dict)
    # A packed sweep's grid points, one list per Tune trial (its param is the index).
    packs: list[list[dict[str, Any]]] | None = None
    sweep_dir: str = ""  # the Tune experiment folder (where trials find their checkpoints)

    def to_json(self) -> dict[str, Any]:
        """The manifest's content (plain data)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**data, "spec": self.spec.resolved()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepSetup:
        return cls(**{**data, "spec": ExperimentSpec.model_validate(data["spec"])})


def run_name(spec: ExperimentSpec, params: dict[str, Any], trial_id: str) -> str:
    """A short run name from the searched values, e.g. ``00003 lr=0.1 widths=[64]``."""
    parts = [trial_id.rsplit("_", 1)[-1]]
    for path, _ in space.domains(spec.parsed_space()):
        value: Any = params
        for key in path:
            value = value[key]
        parts.append(
            f"{path[-1]}={value:.4g}" if isinstance(value, float) else f"{path[-1]}={value}"
        )
    return " ".join(parts)[:250]


@dataclass(frozen=True)
class TrialPoint:
    """One MLflow run's worth of training: a trainer, its resolved config and seed."""

    trial_id: str  # the run's dynsweep.trial_id (a packed member: TRIAL-NNN)
    run_name: str
    trainer: str
    config: dict[str, Any]  # the trainer's config with every default filled in
    seed: int

    def params(self) -> dict[str, str]:
        """The run's MLflow params: the flattened config, the seed and the trainer."""
        flat = tracking.flatten(self.config, "config")
        return {**flat, "seed": str(self.seed), "trainer": self.trainer}

    def header(self, run_id: str) -> dict[str, Any]:
        """What every checkpoint and the final model carry about their trial."""
        return {"trial_id": self.trial_id, "run_id": run_id, **self.record()}

    def record(self) -> dict[str, Any]:
        """The run's ``config.json``."""
        return {"trainer": self.trainer, "config": self.config, "seed": self.seed}


def open_runs(
    uri: str,
    experiment_id: str,
    parent_id: str,
    points: list[TrialPoint],
    tags: dict[str, str],
    pack_id: str | None = None,
    sender: MetricSender | None = None,
) -> list[TrialRun]:
    """The run of each point (:func:`tracking.trial_run.find_or_create_runs`): found again
    by its trial id (a retry or a resumed sweep: a new attempt in the same run) or created
    with its params, ``tags`` and the point's seed, its ``config.json`` written once.

    ``pack_id``: the points are the members of one packed trial, all logging through
    ``sender`` (on a SQL store created in one transaction).
    """

    specs = [
        RunSpec(p.trial_id, p.run_name, p.params(), {**tags, tag.SEED: str(p.seed)}) for p in points
    ]
    runs = find_or_create_runs(uri, experiment_id, parent_id, specs, sender, pack_id)
    for run, point in zip(runs, points):
        if run.attempt == 0 and run.final is None:  # a new run
            run.log_dict(point.record(), "config.json")
    return runs


def trial_device(spec: ExperimentSpec) -> torch.device:
    """CUDA when the trial holds a GPU, else CPU."""
    return torch.device("cuda" if spec.resources.gpus > 0 and torch.cuda.is_available() else "cpu")


Tags = dict[str, str]


@dataclass
class ContextBase(ABC):
    """What the :class:`trainers.base.Context` of every trial shares: one report path and
    ``finish``. A subclass has the fields ``workdir``, ``data_dir``, ``header`` (what its
    checkpoints carry), ``device`` and ``parallel`` (its own, in the order its callers pass
    them; the fields here are keyword-only and come after them), and says which runs it
    reports (:meth:`run_ids`), how it flushes, keeps the final model and ends its run(s)
    (:meth:`flush`, :meth:`keep_final`, :meth:`_end_runs`) and how a report is sent
    (:meth:`_send`: Tune here; Ray Train, or a folder under MPI, in subclasses).
    """

    _: KW_ONLY
    latest: dict[str, float] = field(default_factory=dict)  # each metric's latest value
    closed: bool = False  # the run(s) were ended by this trial (the driver need not check)
    # The sweep's metric(s): Tune requires them in every report, so one that a trainer only
    # produces later (e.g. at the end) is reported as NaN until then (set by train()).
    required: tuple[str, ...] = ()
    curves: bool = True  # keep figures/learning_curves.png at the end (set by train())

    @property
    def state_file(self) -> str:
        """This process's checkpoint file (:func:`orchestrator.checkpoints.state_file`)."""
        return state_file(self.parallel.rank)

    @abstractmethod
    def run_ids(self) -> str:
        """The MLflow run(s) the reports are about, comma-separated (the status callback)."""

    @abstractmethod
    def flush(self) -> None:
        """Wait until every logged metric is stored."""

    @abstractmethod
    def keep_final(self, step: int, export: Any) -> None:
        """Keep the final model(s) (and figures) before the run(s) end."""

    def end(
        self, status: str, error: str | None = None, fatal: bool = False, tags: Tags | None = None
    ) -> None:
        """End the run(s) with ``status`` (``error``: why; ``fatal``: a retry must not run
        them again, tagged ``dynsweep.fatal``)."""
        tags = {**(tags or {}), **({tag.FATAL: error} if fatal and error else {})}
        self._end_runs(status, error, tags)

    @abstractmethod
    def _end_runs(self, status: str, error: str | None, tags: Tags) -> None:
        """End the run(s) that are still open, with ``tags``; mark this context closed."""

    def report(self, step: int, metrics: dict[str, float], checkpoint: dict | None) -> None:
        # The latest value of every metric (eval metrics come less often than train ones).
        self.latest.update(metrics)
        result = {
            **self.latest,
            "step": step,
            "mlflow_run_id": self.run_ids(),
            "mlflow_run_closed": self.closed,
        }
        for key in self.required:
            result.setdefault(key, float("nan"))
        if checkpoint is None:
            self._send(result, None)
            return
        self.flush()  # a checkpoint is a durability point: its metrics are stored first
        with tempfile.TemporaryDirectory(prefix="dynsweep-ckpt-") as tmp:
            torch.save(checkpoint_state(self.header, checkpoint), Path(tmp) / self.state_file)
            self._send(result, Path(tmp))

    def _send(self, result: dict[str, Any], folder: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(folder) if folder is not None else None
        tune.report(result, checkpoint=checkpoint)

    def finish(self, result: FitResult, checkpoint: dict, export: Any) -> None:
        # Everything is kept and the run closed before the last report: a scheduler whose
        # horizon ends here (ASHA's max_t) stops the trial inside that report.
        self.keep_final(result.step, export)
        self.end("FINISHED", tags={tag.STOP_REASON: result.stop_reason})
        self.report(result.step, result.metrics, checkpoint)


@dataclass
class TrialContext(ContextBase):
    """The :class:`trainers.base.Context` of a plain trial: its MLflow run plus reports. It
    is also its own (single) :class:`trainers.base.Member`, and a packed trial's members are
    each one of these (their reports go through the pack).

    In a distributed trial every rank has one; only rank 0 has a ``run`` (logs metrics, writes
    trajectories and artifacts); every rank reports and saves its own state in checkpoints.
    """

    run: TrialRun | None
    seed: int
    workdir: Path
    data_dir: Path
    header: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    parallel: Parallel = field(default_factory=Parallel)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log_metrics(step, metrics)
        self.latest.update(metrics)

    @property
    def members(self) -> list[TrialContext]:
        return [self]

    @property
    def trajectory_dir(self) -> Path:
        # On a local artifact store chunks are written straight into the run's artifacts.
        local = self.run.local_artifact_dir("trajectories") if self.run is not None else None
        return local or self.workdir / "trajectories"

    def run_ids(self) -> str:
        return self.header["run_id"]

    def keep_final(self, step: int, export: dict) -> None:
        if self.run is not None:
            self.keep_model(step, export)
            if self.curves:
                self.keep_curves()

    def keep_model(self, step: int, export: dict) -> None:
        """Save the final model as the run's ``model/model.pt`` (with config and seed)."""
        model_path = self.run.artifact_path("model/model.pt", self.workdir)
        torch.save({**self.header, "step": step, "state": export}, model_path)
        self.run.keep(model_path, "model/model.pt")

    def keep_curves(self) -> None:
        """The run's learning curves as ``figures/learning_curves.png`` (its whole history)."""
        from orchestrator.figures import learning_curves

        keys = [k for k in self.latest if not k.startswith("pack/")]
        title = f"Learning curves of run {self.run.run_name or self.run.run_id}"
        png = learning_curves(self.run.histories(keys), title)
        path = self.run.artifact_path("figures/learning_curves.png", self.workdir)
        path.write_bytes(png)
        self.run.keep(path, "figures/learning_curves.png")

    def _end_runs(self, status: str, error: str | None, tags: Tags) -> None:
        if self.run is not None and not self.closed:  # rank 0
            self.run.end(status, error, tags=tags)
            self.closed = True

    def fail(self, message: str) -> None:
        """A member of a packed trial diverged: its run fails; the others go on."""
        self.end("FAILED", message, fatal=True)

    def flush(self) -> None:
        if self.run is not None:
            self.run.flush()

    def log_file(self, path: Path, artifact_path: str) -> None:
        if self.run is not None:
            self.run.log_artifact(path, artifact_path)

    def on_trajectory_file(self, name: str, path: Path) -> None:
        if self.run is not None and self.run.local_artifact_dir("trajectories") is None:
            self.run.log_artifact(path, f"trajectories/{name}")  # remote store: upload


def end_fatal_runs(runs: list[TrialRun]) -> None:
    """Runs that failed for good in an earlier attempt (``dynsweep.fatal``: diverged, missing
    data) end FAILED again with their first reason instead of training; when no run is left
    (a plain trial's one run, every member of a pack), the trial fails at once."""
    failed = [run for run in runs if run.fatal_error]
    for run in failed:
        run.end("FAILED", run.fatal_error, fatal=True)
    if failed and len(failed) == len(runs):
        raise TrialFailure(failed[0].fatal_error)


def report_finished(*runs: TrialRun) -> None:
    """Report the final metrics of runs that had finished already, without training."""
    for run in runs:
        run.close()
    keys = set().union(*(run.final for run in runs))
    result = {k: sum(r.final.get(k, 0.0) for r in runs) / len(runs) for k in keys}
    ids = ",".join(r.run_id for r in runs)
    step = max(r.logged_step for r in runs)
    tune.report({**result, "step": step, "mlflow_run_id": ids, "mlflow_run_closed": True})


def resumable_state(
    setup: SweepSetup, trial_id: str, run: TrialRun, config: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The checkpoint state to resume from (see :func:`resume_state`: ``config`` is the
    trial's now); damaged files passed over are noted on the run."""
    try:
        state, damaged = resume_state(setup.sweep_dir, trial_id, config=config)
    except DataError as exc:  # nothing readable: fail, naming the files, keeping what was logged
        run.end("FAILED", str(exc), fatal=True)
        raise
    if damaged:
        run.set_tags({tag.WARNING: "; ".join(damaged)[:4000]})
    return state


def train(trainer, ctx, spec: ExperimentSpec, resume, attempt: int, sweep_dir: str = "") -> None:
    """Run the loop in ``ctx`` (a :class:`TrialContext` or a pack's context); on failure end
    the run(s) (rank 0) with the right status (an S3 ``sweep_dir`` that did not answer: one
    error that says so and what to do)."""
    ctx.required = (spec.metric, *(spec.search.objectives or {}))
    ctx.curves = spec.loop.learning_curves
    loop = spec.loop if ctx.parallel.chief else spec.loop.model_copy(update={"record": ()})
    try:
        fit(trainer, ctx, loop, spec.stop, resume=resume, attempt=attempt)
    except (TrialFailure, DataError) as exc:  # retrying cannot help
        ctx.end("FAILED", str(exc), fatal=True)
        raise
    except SystemExit:
        # Tune stopped this trial (scheduler decision, or the sweep was interrupted): keep
        # what was logged; the driver sets the status (FINISHED by scheduler, or KILLED).
        ctx.flush()
        raise
    except BaseException as exc:
        error = unreachable(sweep_dir, exc) if isinstance(exc, OSError) else exc
        ctx.end("FAILED", f"{type(error).__name__}: {error}")
        if error is exc:
            raise
        raise error from None
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
