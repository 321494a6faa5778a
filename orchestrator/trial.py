"""One Tune trial: open (or find again) its MLflow run, build the trainer, run the loop.

A retried trial (after a crash) or a resumed sweep continues from its newest checkpoint
(:mod:`orchestrator.checkpoints`) in the same MLflow run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from dynsweep.errors import DataError, TrialFailure
from orchestrator import space
from orchestrator.checkpoints import resume_state, state_file
from orchestrator.spec import ExperimentSpec
from orchestrator.tracking import TrialRun, flatten
from trainers import get_trainer_class
from trainers.base import FitResult
from trainers.distributed import Parallel
from trainers.loop import fit


@dataclass(frozen=True)
class SweepSetup:
    """What every trial of a sweep needs; saved beside the Tune experiment for ``resume``."""

    spec: dict[str, Any]
    uri: str
    experiment_id: str
    parent_run_id: str
    data_dir: str
    tags: dict[str, str] = field(default_factory=dict)
    # A packed sweep's grid points, one list per Tune trial (its param is the index).
    packs: list[list[dict[str, Any]]] | None = None
    sweep_dir: str = ""  # the Tune experiment folder (where trials find their checkpoints)


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


@dataclass
class TrialContext:
    """The :class:`trainers.base.Context` of a Tune trial: MLflow run + Tune reporting.

    In a distributed trial every rank has one; only rank 0 has a ``run`` (logs metrics, writes
    trajectories and artifacts); every rank reports and saves its own state in checkpoints.
    """

    run: TrialRun | None
    seed: int
    workdir: Path
    data_dir: Path
    header: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    latest: dict[str, float] = field(default_factory=dict)
    closed: bool = False  # the run was ended by this trial (the driver need not check)
    parallel: Parallel = field(default_factory=Parallel)
    # The sweep's metric(s): Tune requires them in every report, so one that a trainer only
    # produces later (e.g. at the end) is reported as NaN until then.
    required: tuple[str, ...] = ()
    curves: bool = True  # keep figures/learning_curves.png at the end (loop.learning_curves)

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

    @property
    def state_file(self) -> str:
        return state_file(self.parallel.rank)

    def report(self, step: int, metrics: dict[str, float], checkpoint: dict | None) -> None:
        # The latest value of every metric (eval metrics come less often than train ones).
        result = {
            **self.latest,
            **metrics,
            "step": step,
            "mlflow_run_id": self.header["run_id"],
            "mlflow_run_closed": self.closed,
        }
        for key in self.required:
            result.setdefault(key, float("nan"))
        if checkpoint is None:
            self._send(result, None)
            return
        if self.run is not None:
            self.run.flush()  # a checkpoint is a durability point: its metrics are stored first
        with tempfile.TemporaryDirectory(prefix="dynsweep-ckpt-") as tmp:
            torch.save({**self.header, "loop": checkpoint}, Path(tmp) / self.state_file)
            self._send(result, Path(tmp))

    def _send(self, result: dict[str, Any], folder: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(folder) if folder is not None else None
        tune.report(result, checkpoint=checkpoint)

    def finish(self, result: FitResult, checkpoint: dict, export: dict) -> None:
        # Everything is kept and the run closed before the last report: a scheduler whose
        # horizon ends here (ASHA's max_t) stops the trial inside that report.
        if self.run is not None:
            self.keep_model(result.step, export)
            if self.curves:
                self.keep_curves()
            self.end("FINISHED", tags={"dynsweep.stop_reason": result.stop_reason})
        self.report(result.step, result.metrics, checkpoint)

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

    def end(
        self,
        status: str,
        error: str | None = None,
        fatal: bool = False,
        tags: dict[str, str] | None = None,
    ) -> None:
        """End the run (rank 0) with ``status``; ``fatal``: a retry must not run it again."""
        if self.run is not None and not self.closed:
            self.run.finish(status, error, fatal=fatal, tags=tags)
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


def trial_device(spec: ExperimentSpec) -> torch.device:
    """CUDA when the trial holds a GPU, else CPU."""
    return torch.device("cuda" if spec.resources.gpus > 0 and torch.cuda.is_available() else "cpu")


def run_trial(setup: SweepSetup, params: dict[str, Any]) -> None:
    """The Tune function of every sweep (``params``: ``{"config": ..., "seed": ...}``)."""
    spec = ExperimentSpec.model_validate(setup.spec)
    if "pack" in params:
        from orchestrator.packing import run_pack_trial

        run_pack_trial(setup, spec, setup.packs[params["pack"]])
        return
    trainer_cls = get_trainer_class(spec.trainer)
    config = trainer_cls.Config.model_validate(params["config"])
    resolved = config.model_dump(mode="json")
    seed = int(params["seed"])
    context = tune.get_context()
    trial_id = context.get_trial_id()

    flat = {**flatten(resolved, "config"), "seed": str(seed), "trainer": spec.trainer}
    run = TrialRun.open(
        setup.uri,
        setup.experiment_id,
        setup.parent_run_id,
        trial_id,
        run_name=run_name(spec, params, trial_id),
        params=flat,
        tags={**setup.tags, "dynsweep.seed": str(seed)},
    )
    state = None
    if run.final is not None:  # the run had finished (see TrialRun.continue_run)
        state = resumable_state(setup, trial_id, run)
        if state is None or state.get("trial_id") == trial_id:
            report_finished(run)  # ...before the driver died: nothing more to train
            return
        run.reopen()  # PBT continues it from another trial's checkpoint
    fatal = run.fatal_error
    if fatal:  # retrying cannot help (e.g. the loss diverged): fail again at once
        run.finish("FAILED", fatal, fatal=True)
        raise TrialFailure(fatal)

    if run.attempt == 0:
        run.log_dict({"trainer": spec.trainer, "config": resolved, "seed": seed}, "config.json")
    header = {
        "trial_id": trial_id,
        "run_id": run.run_id,
        "trainer": spec.trainer,
        "config": resolved,
        "seed": seed,
    }
    if spec.resources.distributed:
        from orchestrator.distributed import run_distributed

        run.close()  # rank 0 of the workers logs from here on
        run_distributed(setup, spec, header, run)
        return

    # (read here, not earlier: a distributed trial's workers read their own checkpoints)
    state = state or resumable_state(setup, trial_id, run)
    resume, attempt = None, 0
    if state is not None:
        resume = state["loop"]
        # MLflow params are immutable: a config changed since the run began (a PBT
        # perturbation) is recorded as a tag at the step where it took effect.
        changed = {k: v for k, v in flat.items() if run.params.get(k, v) != v}
        if changed:
            run.set_tags({f"dynsweep.config_at_step_{resume['step']}": json.dumps(changed)})
        attempt = run.attempt
    device = trial_device(spec)
    # Scratch space for trajectory chunks and the final model before they go to MLflow; not
    # the Tune trial folder, which Tune copies to its storage (that would store them twice).
    workdir = Path(tempfile.mkdtemp(prefix=f"dynsweep-{trial_id}-"))
    ctx = TrialContext(run, seed, workdir, Path(setup.data_dir), header, device)
    train(trainer_cls(config), ctx, spec, resume, attempt)


def report_finished(*runs: TrialRun) -> None:
    """Report the final metrics of runs that had finished already, without training."""
    for run in runs:
        run.close()
    keys = set().union(*(run.final for run in runs))
    result = {k: sum(r.final.get(k, 0.0) for r in runs) / len(runs) for k in keys}
    ids = ",".join(r.run_id for r in runs)
    step = max(r.logged_step for r in runs)
    tune.report({**result, "step": step, "mlflow_run_id": ids, "mlflow_run_closed": True})


def resumable_state(setup: SweepSetup, trial_id: str, run: TrialRun) -> dict[str, Any] | None:
    """The checkpoint state to resume from; damaged files passed over are noted on the run."""
    try:
        state, damaged = resume_state(setup.sweep_dir, trial_id)
    except DataError as exc:  # nothing readable: fail, naming the files, keeping what was logged
        run.finish("FAILED", str(exc), fatal=True)
        raise
    if damaged:
        run.set_tags({"dynsweep.warning": "; ".join(damaged)[:4000]})
    return state


def train(trainer, ctx: TrialContext, spec: ExperimentSpec, resume, attempt: int) -> None:
    """Run the loop in ``ctx``; on failure end the run (rank 0) with the right status."""
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
        ctx.end("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)


def make_trainable(setup: SweepSetup):
    """The Tune trainable of a sweep, with the per-trial resources of its spec."""
    spec = ExperimentSpec.model_validate(setup.spec)

    def dynsweep_trial(params: dict[str, Any]) -> None:
        run_trial(setup, params)

    res = spec.resources
    if res.distributed:
        # The workers hold the CPUs/GPUs; the Tune function only waits on them, so it takes
        # no CPU (a whole CPU would keep 2 one-CPU workers off a 2-CPU machine).
        return tune.with_resources(dynsweep_trial, tune.PlacementGroupFactory([{"memory": 1}]))
    return tune.with_resources(dynsweep_trial, {"cpu": res.cpus, "gpu": res.gpus})
