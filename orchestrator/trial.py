"""The Tune function of every sweep: it picks the plain, packed or distributed path.

A plain trial opens (or finds again) its MLflow run, resumes from its newest checkpoint
(:mod:`orchestrator.checkpoints`) and runs the loop; a packed trial goes to
:mod:`orchestrator.packing`, a distributed one to :mod:`orchestrator.distributed`. What these
paths share (the context, opening runs, the loop's exit statuses) is :mod:`orchestrator.context`.

Both trials take the same steps: open (or find again) the run(s); report the final metrics of
runs that had finished before the driver died; end again, at once, runs that failed for good;
read the newest checkpoint; build the context; :func:`orchestrator.context.train`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.checkpoints import lineage
from orchestrator.context import (
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
from orchestrator.storage import unreachable
from tracking import tags as tag
from trainers import get_trainer_class


def run_trial(setup: SweepSetup, params: dict[str, Any]) -> None:
    """The Tune function's work (``params``: ``{"config": ..., "seed": ...}`` or
    ``{"pack": index}``)."""
    spec = setup.spec
    if "pack" in params:
        from orchestrator.packing import run_pack_trial

        run_pack_trial(setup, setup.packs[params["pack"]])
        return
    trainer_cls = get_trainer_class(spec.trainer)
    config = trainer_cls.Config.model_validate(params["config"])
    trial_id = tune.get_context().get_trial_id()
    point = TrialPoint(
        trial_id,
        run_name(spec, params, trial_id),
        spec.trainer,
        config.model_dump(mode="json"),
        int(params["seed"]),
    )
    (run,) = open_runs(setup.uri, setup.experiment_id, setup.parent_run_id, [point], setup.tags)
    state = None
    if run.final is not None:  # the run had finished (see TrialRun.continue_run)
        state = resumable_state(setup, trial_id, run, point.config)
        if state is None or state.get("trial_id") == trial_id:
            report_finished(run)  # ...before the driver died: nothing more to train
            return
        run.reopen()  # PBT continues it from another trial's checkpoint
    end_fatal_runs([run])  # retrying cannot help (e.g. the loss diverged): fail again at once

    if spec.resources.distributed:
        from orchestrator.distributed import run_distributed

        run.close()  # rank 0 of the workers logs from here on
        run_distributed(setup, point.header(run.run_id), run)
        return

    # (read here, not earlier: a distributed trial's workers read their own checkpoints)
    state = state or resumable_state(setup, trial_id, run, point.config)
    header = {**point.header(run.run_id), "origins": lineage(state, trial_id)}
    resume, attempt = None, 0
    if state is not None:
        resume = state["loop"]
        # MLflow params are immutable: a config changed since the run began (a PBT
        # perturbation) is recorded as a tag at the step where it took effect.
        changed = {k: v for k, v in point.params().items() if run.params.get(k, v) != v}
        if changed:
            run.set_tags({tag.config_at_step(resume["step"]): json.dumps(changed)})
        attempt = run.attempt
    # Scratch space for trajectory chunks and the final model before they go to MLflow; not
    # the Tune trial folder, which Tune copies to its storage (that would store them twice).
    workdir = Path(tempfile.mkdtemp(prefix=f"dynsweep-{trial_id}-"))
    ctx = TrialContext(run, point.seed, workdir, Path(setup.data_dir), header, trial_device(spec))
    train(trainer_cls(config), ctx, spec, resume, attempt, setup.sweep_dir)


def make_trainable(setup: SweepSetup):
    """The Tune trainable of a sweep, with the per-trial resources of its spec."""

    def dynsweep_trial(params: dict[str, Any]) -> None:
        try:
            run_trial(setup, params)
        except OSError as exc:  # a checkpoint upload or download that S3 did not answer
            error = unreachable(setup.sweep_dir, exc)
            if error is exc:
                raise
            raise error from None

    res = setup.spec.resources
    if res.distributed:
        # The workers hold the CPUs/GPUs; the Tune function only waits on them, so it takes
        # no CPU (a whole CPU would keep 2 one-CPU workers off a 2-CPU machine).
        return tune.with_resources(dynsweep_trial, tune.PlacementGroupFactory([{"memory": 1}]))
    return tune.with_resources(dynsweep_trial, {"cpu": res.cpus, "gpu": res.gpus})
