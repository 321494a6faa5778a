"""Building, running and resuming a sweep: one Ray Tune ``Tuner`` per experiment.

``run(spec)`` checks the tracking store and the Ray address, opens the sweep's parent MLflow
run, writes ``dynsweep_sweep.json`` beside the Tune experiment (so ``resume`` can rebuild
everything), runs the trials, closes every trial's run with its true status, calls the
caller's ``after`` (the CLI prints the summary and runs the analysis there) and closes the
parent run, on every path.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

import tracking
from dynsweep import logs
from dynsweep.errors import ConfigError, UserError
from orchestrator import chain, registry, space
from orchestrator.context import SweepSetup
from orchestrator.devices import check_local, per_trial
from orchestrator.driver import INTERRUPTED, interruptible, quiet_tune
from orchestrator.nodes import check_multi_node
from orchestrator.plan import member_cap, slots
from orchestrator.progress import PendingWatch, SweepProgress
from orchestrator.spec import ExperimentSpec
from orchestrator.storage import SweepFolder, describe, is_uri
from orchestrator.trial import make_trainable
from tracking import tags as tag
from trainers import get_trainer_class

MANIFEST = "dynsweep_sweep.json"


@dataclass
class SweepOutcome:
    folder: SweepFolder
    setup: SweepSetup
    status: str  # FINISHED | KILLED | FAILED (no trial could be placed in time)
    seconds: float
    error: str | None = None


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local") and "://" not in address:
        _check_tcp(address)
    # A local instance gets no dashboard (nothing listens beyond what Ray needs); an existing
    # cluster keeps its own settings.
    extra = {} if address else {"include_dashboard": False}
    try:  # Ray's and MLflow's log levels, here and in the workers (see dynsweep.logs)
        ray.init(address=address, **logs.ray_init_options(), **extra)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--address: cannot connect to Ray at {address!r} ({exc})") from None


def _check_tcp(address: str, timeout: float = 3.0) -> None:
    """Fail fast on a wrong ``host:port`` (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"--address: expected host:port, 'auto' or ray://host:port, got {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address} ({exc})") from None


def _tuner(setup: SweepSetup, folder: SweepFolder, restore: bool, watch: PendingWatch):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.callbacks import RunStatusCallback

    spec = setup.spec
    trainable = make_trainable(setup)
    if restore:
        try:
            return tune.Tuner.restore(
                folder.path,
                trainable,
                storage_filesystem=None if folder.local else folder.fs,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        except Exception as exc:  # a state that parses but that Tune cannot use
            raise UserError(
                f"{describe(folder.location)}: Tune cannot restore this sweep "
                f"({type(exc).__name__}: {exc})"
            ) from None
    multi = bool(spec.search.objectives)
    searcher = registry.make_searcher(spec, setup.parent_run_id)
    # Tune limits concurrency through a Searcher; other search algorithms (the grid/random
    # generator) take the limit themselves (registry), and Tune warns when it is passed again.
    concurrent = spec.max_concurrent_trials if isinstance(searcher, tune.search.Searcher) else None
    trials = spec.num_trials() if setup.packs is None else len(setup.packs)
    param_space, samples = space.to_tune(spec.parsed_space()), spec.num_samples
    if setup.packs is not None:  # one trial per pack of grid points (repeats inside packs)
        param_space, samples = {"pack": tune.grid_search(list(range(len(setup.packs))))}, 1
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=None if multi else spec.metric,
            mode=None if multi else spec.mode,
            search_alg=searcher,
            scheduler=registry.make_scheduler(spec),
            num_samples=samples,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            # No new process (imports, store connections) per trial; PBT's pause/exploit
            # cycle is left to fresh actors, with which its exploitation was verified.
            reuse_actors=spec.scheduler.name != "pbt",
            trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=folder.name,
            # Tune keeps its experiment state and the trials' checkpoints there, written by
            # whichever node runs a trial (an object store needs no shared disk).
            storage_path=folder.parent_path(),
            storage_filesystem=None if folder.local else folder.fs,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # On object storage every checkpoint is kept: deleting one and saving Tune's state
            # are two uploads, and a driver killed between them leaves a state that names a
            # deleted checkpoint, which Tune cannot restore (expire old ones with a bucket
            # lifecycle rule). A local disk keeps the two newest, except under PBT: an exploit
            # restores the checkpoint another trial had at its last perturbation, which that
            # trial, running ahead, may since have deleted (the exploit then fails).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_keep(spec, folder)),
            stop=watch.stopper,
            callbacks=[
                watch,
                RunStatusCallback(setup.uri),
                SweepProgress(spec.metric, trials, spec.stop.iterations),
                CSVLoggerCallback(),  # Tune's result files in each trial folder, as by default
                JsonLoggerCallback(),
            ],
            verbose=0,  # SweepProgress shows the trials (see quiet_tune)
        ),
    )


def _keep(spec: ExperimentSpec, folder: SweepFolder) -> int | None:
    """How many checkpoints of a trial Tune keeps (None: all; see ``_tuner``)."""
    return 2 if folder.local and spec.scheduler.name != "pbt" else None


After = Callable[[SweepOutcome], None]


def _execute(
    setup: SweepSetup, folder: SweepFolder, restore: bool, after: After | None = None
) -> SweepOutcome:
    """Run (or restore) the Tuner, close the trials' runs, call ``after`` (the summary and
    analysis) while the parent run is still open, and close the parent run in every case:
    FINISHED, KILLED (``resume`` continues it) or FAILED with the error — a searcher or
    scheduler that cannot be built, Tune failing, no trial placed in time, or ``after``
    raising."""
    started = time.monotonic()
    uri, exp, parent = setup.uri, setup.experiment_id, setup.parent_run_id
    status, error = "FAILED", None  # every path below sets both before `finally` reads them
    try:
        watch = PendingWatch(per_trial(setup.spec), setup.spec.resources.schedule_timeout_s)
        tuner = _tuner(setup, folder, restore, watch)  # an Optuna RDB storage connects here
        if restore:
            tracking.reopen_run(uri, parent)
        try:
            with interruptible(), quiet_tune():
                tuner.fit()
            unfinished = INTERRUPTED.is_set()
        except KeyboardInterrupt:
            unfinished = True
        if watch.expired:
            status, error = "FAILED", watch.expired
        elif unfinished:
            status = "KILLED"
            error = f"interrupted; continue with: dynsweep resume {describe(folder.location)}"
        else:
            status, error = "FINISHED", None
        # Runs still open belong to trials that were interrupted (resume continues them) or
        # whose process died without a word (failed).
        tracking.close_unfinished_children(
            uri, exp, parent, "KILLED" if status == "KILLED" else "FAILED"
        )
        outcome = SweepOutcome(folder, setup, status, time.monotonic() - started, error)
        if after is not None:
            after(outcome)
        return outcome
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # Ctrl+C outside Tune (its set-up, `after`)
            status = "KILLED"
            error = f"interrupted; continue with: dynsweep resume {describe(folder.location)}"
        else:
            status, error = "FAILED", f"{type(exc).__name__}: {exc}"
        tracking.close_unfinished_children(uri, exp, parent, status)
        raise
    finally:
        tracking.end_run(uri, parent, status, error)


def _write_manifest(folder: SweepFolder, setup: SweepSetup) -> None:
    folder.write_text(MANIFEST, json.dumps(setup.to_json(), indent=2))


def run(
    spec: ExperimentSpec,
    address: str | None = None,
    tracking_uri: str | None = None,
    after: After | None = None,
) -> SweepOutcome:
    """Run a sweep to its end (or until interrupted; then ``resume`` continues it), then
    ``after(outcome)`` (the CLI's summary and analysis); the parent run is closed when this
    returns or raises (see :func:`_execute`)."""
    check_local(spec, address)  # GPUs this machine lacks: refused before anything starts
    uri = tracking.tracking_uri(tracking_uri, spec.tracking.uri)
    tracking.check_reachable(uri)
    spec = resolve_config(spec, uri)
    prepare_data(spec)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = SweepFolder.at(spec.storage).child(f"{spec.name}-{stamp}")
    init_ray(address)
    check_multi_node(uri, None)  # a sqlite file, before anything is written to it
    experiment_id = tracking.ensure_experiment(uri, spec.experiment_name())
    check_multi_node(uri, tracking.artifact_location(uri, experiment_id))
    tags = {
        tag.GIT_SHA: tracking.git_sha(),
        tag.CONFIG_HASH: spec.config_hash(),
        tag.SEED: json.dumps(spec.seed),
        **tracking.environment_tags(),
    }
    parent = tracking.start_sweep_run(
        uri,
        experiment_id,
        folder.name,
        spec.resolved(),
        {**tags, tag.SWEEP_DIR: describe(folder.location)},
    )
    packs = None
    if spec.pack != 1:
        from orchestrator.packing import make_packs

        packs = make_packs(spec, slots(spec), member_cap(spec)[0])
    setup = SweepSetup(
        spec,
        uri,
        experiment_id,
        parent,
        str(Path(spec.data_dir).resolve()),
        tags,
        packs,
        folder.location,
    )
    _write_manifest(folder, setup)
    return _execute(setup, folder, restore=False, after=after)


def resolve_config(spec: ExperimentSpec, uri: str) -> ExperimentSpec:
    """The spec with its config's ``{runs: …}`` queries answered and ``run:ID/ARTIFACT``
    references replaced by local paths (a chained stage's inputs), validated again; an
    unanswerable query or a missing run is one error naming the field."""
    return _with_references(_with_runs(spec, uri), uri)


def _with_runs(spec: ExperimentSpec, uri: str) -> ExperimentSpec:
    """Answer the config's ``{runs: …}`` queries (see :mod:`orchestrator.chain`) and
    validate the result as a new spec."""
    from orchestrator.spec import load_spec

    if not chain.queries(spec.config):
        return spec
    raw = spec.model_dump(mode="json")
    return load_spec(raw={**raw, "config": chain.resolve(raw["config"], uri)})


def _with_references(spec: ExperimentSpec, uri: str) -> ExperimentSpec:
    """Replace ``run:ID/ARTIFACT`` references in the config by local paths (see
    :mod:`orchestrator.references`)."""
    from orchestrator import references

    raw = spec.model_dump(mode="json")
    resolved = references.resolve(raw["config"], uri)
    if resolved == raw["config"]:
        return spec
    return ExperimentSpec.model_validate({**raw, "config": resolved})


def prepare_data(spec: ExperimentSpec) -> None:
    """Let the trainer fetch its data once, here, before Ray starts (see Trainer.prepare)."""
    cls = get_trainer_class(spec.trainer)
    configs = [
        cls.Config.model_validate(c) for _, c in space.variants(spec.parsed_space()["config"])
    ]
    cls.prepare(configs, Path(spec.data_dir).resolve())


def find_sweep(name_or_path: str, storage: str = "dynsweep_runs") -> SweepFolder:
    """A sweep folder from its path or URI, its folder name, or an experiment name (its
    newest sweep) under ``storage``."""
    if is_uri(name_or_path) or Path(name_or_path, MANIFEST).is_file():
        folder = SweepFolder.at(name_or_path)
        if not folder.is_file(MANIFEST):
            raise UserError(f"resume: {describe(name_or_path)} holds no {MANIFEST}")
        return folder
    root = SweepFolder.at(storage)
    if root.child(name_or_path).is_file(MANIFEST):
        return root.child(name_or_path)
    names = sorted(
        info.base_name
        for info in root.list()
        if info.type.name == "Directory" and info.base_name.startswith(f"{name_or_path}-")
    )
    candidates = [n for n in names if root.child(n).is_file(MANIFEST)]
    if not candidates:
        raise UserError(
            f"resume: no sweep {name_or_path!r}: expected a sweep folder holding "
            f"{MANIFEST} (a path or URI), or the name of an experiment with sweeps under "
            f"{describe(root.location)}/ (set it with --storage)"
        )
    return root.child(candidates[-1])


def check_tune_state(folder: SweepFolder) -> None:
    """Refuse, naming the file, a Tune experiment state that ``Tuner.restore`` cannot read."""
    where = describe(folder.location)
    states = sorted(
        info.base_name
        for info in folder.list()
        if info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json")
    )
    if not states:
        raise UserError(
            f"{where}: no Tune experiment state (experiment_state-*.json), so the sweep "
            "cannot be resumed; its MLflow runs are kept — run the experiment again to redo it"
        )
    try:
        json.loads(folder.read_text(states[-1]))  # Tune reads the newest
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{where}/{states[-1]}: damaged Tune experiment state ({exc}); the sweep cannot be "
            "resumed from it (its MLflow runs and checkpoints are untouched)"
        ) from None
    if not folder.is_file("tuner.pkl") or folder.size("tuner.pkl") == 0:
        raise UserError(f"{where}/tuner.pkl: missing or empty; the sweep cannot be resumed from it")


def resume(
    name_or_path: str,
    address: str | None = None,
    storage: str = "dynsweep_runs",
    after: After | None = None,
) -> SweepOutcome:
    """Continue an interrupted sweep: finished trials stay, the others go on from checkpoints.
    Any machine that reaches the sweep's storage (and tracking store) can resume it. ``after``
    and the parent run's status as in :func:`run`."""
    folder = find_sweep(name_or_path, storage)
    try:
        setup = SweepSetup.from_json(json.loads(folder.read_text(MANIFEST)))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValidationError) as exc:
        raise UserError(
            f"{describe(folder.location)}/{MANIFEST}: damaged sweep manifest ({exc})"
        ) from None
    check_tune_state(folder)
    check_local(setup.spec, address)
    tracking.check_reachable(setup.uri)
    init_ray(address)
    check_multi_node(setup.uri, tracking.artifact_location(setup.uri, setup.experiment_id))
    return _execute(setup, folder, restore=True, after=after)
