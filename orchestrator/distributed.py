"""Distributed trials: the Tune function starts a Ray Train ``TorchTrainer`` (the Train V2
pattern) and waits; its workers run the same loop as every trial, DDP or DeepSpeed.

Rank 0 logs to the trial's MLflow run (found by id), records trajectories and keeps the model;
every rank reports each step it reports at (Train needs all ranks) and saves its own state file
in checkpoints. ``TuneReportCallback`` forwards rank 0's reports to Tune, so schedulers see
them. A failed worker group is restarted by Train (``FailureConfig``) from its last checkpoint,
in the same MLflow run; a resumed sweep finds the Train run in the trial folder and continues.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from dynsweep import logs
from orchestrator.checkpoints import load_state, state_file
from orchestrator.context import SweepSetup, TrialContext, end_fatal_runs, train
from orchestrator.storage import SweepFolder
from tracking import TrialRun
from trainers import get_trainer_class
from trainers.distributed import Parallel


class WorkerContext(TrialContext):
    """A rank of a distributed trial: reports go to Ray Train (and from rank 0 on to Tune)."""

    def _send(self, result: dict[str, Any], folder: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(result, checkpoint=checkpoint)


def train_worker(job: dict[str, Any]) -> None:
    """The per-worker function of the ``TorchTrainer``."""
    setup: SweepSetup = job["setup"]
    spec = setup.spec
    header = job["header"]
    trainer_cls = get_trainer_class(spec.trainer)
    config = trainer_cls.Config.model_validate(header["config"])
    context = ray.train.get_context()
    res = spec.resources
    parallel = Parallel(
        world_size=context.get_world_size(),
        rank=context.get_world_rank(),
        strategy=res.strategy,
        zero_stage=res.zero_stage,
        precision=res.precision,
    )
    run = TrialRun.attach(setup.uri, header["run_id"]) if parallel.chief else None
    if run is not None:  # e.g. diverged: a restart cannot help
        end_fatal_runs([run])
    resume, attempt = None, run.attempt if run is not None else 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(Path(folder) / state_file(parallel.rank))["loop"]
    workdir = Path(tempfile.mkdtemp(prefix=f"dynsweep-{header['trial_id']}-r{parallel.rank}-"))
    ctx = WorkerContext(
        run,
        int(header["seed"]),
        workdir,
        Path(setup.data_dir),
        header,
        ray.train.torch.get_device(),
        parallel=parallel,
    )
    train(trainer_cls(config), ctx, spec, resume, attempt, setup.sweep_dir)


def run_distributed(setup: SweepSetup, header: dict[str, Any], run: TrialRun) -> None:
    """Train one trial on ``resources.workers`` Ray Train workers and wait for it."""
    spec = setup.spec
    res = spec.resources
    folder = SweepFolder.at(setup.sweep_dir) if setup.sweep_dir else None
    if folder is None or folder.local:
        storage, fs = str(Path(tune.get_context().get_trial_dir())), None
    else:  # beside the trial's Tune checkpoints: a restart on any node, or a resume, finds it
        storage, fs = folder.child(f"trial_{tune.get_context().get_trial_id()}").path, folder.fs
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={"setup": setup, "header": header},
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpus_per_worker > 0,
            resources_per_worker={"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=storage,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            callbacks=[TuneReportCallback()],
            # Train's own INFO lines (worker group starts, checkpoints) only with --verbose
            logging_config=ray.train.LoggingConfig(log_level=logs.level_name()),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:
        # The workers ended the run when they could; make sure it does not stay RUNNING.
        run.end_if_running("FAILED", f"{type(exc).__name__}: {exc}")
        raise
