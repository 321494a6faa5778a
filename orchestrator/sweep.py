"""The Tune side of a sweep, for :class:`orchestrator.session.SweepSession`: Ray's
connection, the ``Tuner`` (new or restored) of one experiment, the sweep's folder and its
manifest ``dynsweep_sweep.json`` (everything ``resume`` needs to rebuild the sweep), and the
checks that a folder can be resumed. The walk of a sweep, in order, is in
:mod:`orchestrator.session`.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from dynsweep import logs
from dynsweep.errors import ConfigError, UserError
from orchestrator import registry, space
from orchestrator.context import SweepSetup
from orchestrator.progress import PendingWatch, SweepProgress
from orchestrator.spec import ExperimentSpec
from orchestrator.storage import SweepFolder, describe, is_uri
from orchestrator.trial import make_trainable

MANIFEST = "dynsweep_sweep.json"


@dataclass
class SweepOutcome:
    """How a sweep ended, as :meth:`orchestrator.session.SweepSession.run` returns it."""

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


def make_tuner(setup: SweepSetup, folder: SweepFolder, restore: bool, watch: PendingWatch):
    """The sweep's ``Tuner``, new or restored from ``folder`` (an Optuna RDB storage connects
    here, when the searcher is built)."""
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
    """How many checkpoints of a trial Tune keeps (None: all; see ``make_tuner``)."""
    return 2 if folder.local and spec.scheduler.name != "pbt" else None


def new_folder(spec: ExperimentSpec) -> SweepFolder:
    """A new sweep's Tune experiment folder: ``storage/NAME-STAMP``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return SweepFolder.at(spec.storage).child(f"{spec.name}-{stamp}")


def write_manifest(folder: SweepFolder, setup: SweepSetup) -> None:
    folder.write_text(MANIFEST, json.dumps(setup.to_json(), indent=2))


def read_manifest(folder: SweepFolder) -> SweepSetup:
    """The sweep's setup, as :func:`write_manifest` saved it; a damaged file is one error."""
    try:
        return SweepSetup.from_json(json.loads(folder.read_text(MANIFEST)))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValidationError) as exc:
        raise UserError(
            f"{describe(folder.location)}/{MANIFEST}: damaged sweep manifest ({exc})"
        ) from None


def find_sweep_folder(name_or_path: str, storage: str = "dynsweep_runs") -> SweepFolder:
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
