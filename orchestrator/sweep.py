"""Building, running and resuming a sweep: one Ray Tune ``Tuner`` per experiment.

``run(spec)`` checks the tracking store and the Ray address, opens the sweep's parent MLflow
run, writes ``dynsweep_sweep.json`` beside the Tune experiment (so ``resume`` can rebuild
everything), runs the trials, closes every run with its true status, prints a summary and
then runs the analysis steps of the spec on the finished trials.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

import tracking
from dynsweep import logs
from dynsweep.errors import ConfigError, UserError
from orchestrator import budget, registry, space
from orchestrator.context import SweepSetup
from orchestrator.spec import ExperimentSpec, dump_yaml
from orchestrator.trial import make_trainable
from tracking import tags as tag
from trainers import get_trainer_class

MANIFEST = "dynsweep_sweep.json"


@dataclass
class SweepOutcome:
    path: Path
    setup: SweepSetup
    status: str  # FINISHED | KILLED
    seconds: float


def _resources(res) -> str:
    if not res.distributed:
        return f"{res.cpus:g} CPU, {res.gpus:g} GPU"
    strategy = res.strategy + (f" ZeRO-{res.zero_stage}" if res.strategy == "deepspeed" else "")
    return (
        f"{res.workers} Ray Train workers x ({res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU), {strategy}, {res.precision}"
    )


def plan(spec: ExperimentSpec) -> str:
    """What a sweep would do (``--dry-run``): resolved spec, trial count, resources."""
    res, n = spec.resources, spec.num_trials()
    concurrent = spec.max_concurrent_trials or "as many as fit"
    dims = [
        f"  {space.dotted(p)}: {d.kind} {list(d.values)}"
        for p, d in space.domains(spec.parsed_space())
    ]
    return "\n".join(
        [
            "# resolved experiment",
            dump_yaml(spec).rstrip(),
            "",
            f"trials: {n} ({spec.search.algorithm} search, {spec.scheduler.name} scheduler)"
            + _packing(spec),
            "search dimensions:",
            *(dims or ["  (none)"]),
            f"resources per trial: {_resources(res)}; concurrent trials: {concurrent}",
            f"steps per trial: {spec.stop.iterations}; tracking: {spec.tracking.uri}",
            f"recordings: about {budget.estimate(spec)[1] / 1e9:.3g} GB "
            f"(budget {spec.loop.record_budget_gb:g} GB)",
        ]
    )


def _packing(spec: ExperimentSpec) -> str:
    if spec.pack == 1:
        return ""
    from orchestrator.packing import make_packs

    packs = make_packs(spec, _slots(spec))
    return f", packed into {len(packs)} Tune trials of up to {max(map(len, packs))} points"


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


INTERRUPTED = threading.Event()


@contextmanager
def interruptible():
    """Ctrl+C / SIGTERM end the sweep gracefully and are remembered in ``INTERRUPTED``.

    Tune's own SIGINT handler does not tell its caller that it fired (the results of an
    interrupted sweep look finished), so ours records it and hands over to Tune's SIGUSR1
    handler, which saves the experiment state for ``resume``. A second Ctrl+C aborts.
    """
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(sig, frame):
        INTERRUPTED.set()
        for s, h in previous.items():
            signal.signal(s, h)
        os.kill(os.getpid(), signal.SIGUSR1)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        with scoped_env(TUNE_DISABLE_SIGINT_HANDLER="1"):
            yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@contextmanager
def scoped_env(**values: str):
    """Set environment variables for the duration of a block, then restore them."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_tune():
    """Tune prints nothing of its own during ``fit`` (dynsweep's SweepProgress shows the trials).

    ``RunConfig(verbose=0)`` alone is not enough: Tune's default console output
    (``ray.tune.experimental.output``) prints its "Configuration for experiment" box, "View
    detailed results here" and the TensorBoard hint whatever the verbosity; with
    ``RAY_AIR_NEW_OUTPUT=0`` Tune uses its former reporter, which at verbosity 0 prints nothing.
    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``: no TensorBoard event files (dynsweep passes
    Tune's CSV and JSON loggers itself). ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_
    THRESHOLD_S=0``: no warning that the experiment state is saved after every second checkpoint
    of a trial — ``CheckpointConfig(num_to_keep=2)`` asks for that, so that ``resume`` finds
    the checkpoints the state names (a save slower than 30 s is still reported). Tune's other
    log messages follow the ``ray`` logger's level (``--verbose``).
    """
    return scoped_env(
        RAY_AIR_NEW_OUTPUT="0",
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
        TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
    )


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


def _tuner(setup: SweepSetup, sweep_dir: Path, restore: bool):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from orchestrator.callbacks import RunStatusCallback
    from orchestrator.progress import SweepProgress

    spec = setup.spec
    trainable = make_trainable(setup)
    if restore:
        try:
            return tune.Tuner.restore(
                str(sweep_dir),
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        except Exception as exc:  # a state that parses but that Tune cannot use
            raise UserError(
                f"{sweep_dir}: Tune cannot restore this sweep ({type(exc).__name__}: {exc})"
            ) from None
    multi = bool(spec.search.objectives)
    searcher = registry.make_searcher(spec)
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
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[
                RunStatusCallback(setup.uri),
                SweepProgress(spec.metric, trials, spec.stop.iterations),
                CSVLoggerCallback(),  # Tune's result files in each trial folder, as by default
                JsonLoggerCallback(),
            ],
            verbose=0,  # SweepProgress shows the trials (see quiet_tune)
        ),
    )


def _slots(spec: ExperimentSpec) -> int:
    """Trials that can run at once (on the Ray cluster when one is connected)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else os.cpu_count()
    slots = max(1, int(cpus // spec.resources.cpus))
    return min(slots, spec.max_concurrent_trials or slots)


def _execute(setup: SweepSetup, sweep_dir: Path, restore: bool) -> SweepOutcome:
    started = time.monotonic()
    tuner = _tuner(setup, sweep_dir, restore)
    if restore:
        tracking.reopen_run(setup.uri, setup.parent_run_id)
    try:
        with interruptible(), quiet_tune():
            tuner.fit()
        unfinished = INTERRUPTED.is_set()
    except KeyboardInterrupt:
        unfinished = True
    except BaseException as exc:  # Tune itself failed: leave no run RUNNING, then re-raise
        tracking.close_unfinished_children(
            setup.uri, setup.experiment_id, setup.parent_run_id, "FAILED"
        )
        tracking.end_run(setup.uri, setup.parent_run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    # Runs still open belong to trials that were interrupted (resume continues them) or whose
    # process died without a word (failed).
    tracking.close_unfinished_children(
        setup.uri, setup.experiment_id, setup.parent_run_id, "KILLED" if unfinished else "FAILED"
    )
    if unfinished:
        tracking.end_run(
            setup.uri,
            setup.parent_run_id,
            "KILLED",
            f"interrupted; continue with: dynsweep resume {sweep_dir}",
        )
    status = "KILLED" if unfinished else "FINISHED"
    return SweepOutcome(sweep_dir, setup, status, time.monotonic() - started)


def _write_manifest(sweep_dir: Path, setup: SweepSetup) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / MANIFEST).write_text(json.dumps(setup.to_json(), indent=2))


def run(
    spec: ExperimentSpec, address: str | None = None, tracking_uri: str | None = None
) -> SweepOutcome:
    """Run a sweep to its end (or until interrupted; then ``resume`` continues it)."""
    uri = tracking.resolve_uri(
        tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking.uri
    )
    tracking.check_reachable(uri)
    spec = _with_references(spec, uri)
    prepare_data(spec)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_dir = (Path(spec.storage) / f"{spec.name}-{stamp}").resolve()
    experiment_id = tracking.ensure_experiment(uri, spec.experiment_name())
    init_ray(address)
    tags = {
        tag.GIT_SHA: tracking.git_sha(),
        tag.CONFIG_HASH: spec.config_hash(),
        tag.SEED: json.dumps(spec.seed),
        **tracking.environment_tags(),
    }
    parent = tracking.start_sweep_run(
        uri,
        experiment_id,
        sweep_dir.name,
        spec.resolved(),
        {**tags, tag.SWEEP_DIR: str(sweep_dir)},
    )
    packs = None
    if spec.pack != 1:
        from orchestrator.packing import make_packs

        packs = make_packs(spec, _slots(spec))
    setup = SweepSetup(
        spec,
        uri,
        experiment_id,
        parent,
        str(Path(spec.data_dir).resolve()),
        tags,
        packs,
        str(sweep_dir),
    )
    _write_manifest(sweep_dir, setup)
    return _execute(setup, sweep_dir, restore=False)


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


def find_sweep_dir(name_or_path: str, storage: str = "dynsweep_runs") -> Path:
    """A sweep folder from its path, its folder name, or an experiment name (newest sweep)."""
    direct = Path(name_or_path)
    if (direct / MANIFEST).is_file():
        return direct.resolve()
    root = Path(storage)
    if (root / name_or_path / MANIFEST).is_file():
        return (root / name_or_path).resolve()
    candidates = sorted(root.glob(f"{name_or_path}-*/{MANIFEST}")) if root.is_dir() else []
    if not candidates:
        raise UserError(
            f"resume: no sweep {name_or_path!r}: expected a sweep folder holding "
            f"{MANIFEST}, or the name of an experiment with sweeps under {root}/"
        )
    return candidates[-1].parent.resolve()


def check_tune_state(sweep_dir: Path) -> None:
    """Refuse, naming the file, a Tune experiment state that ``Tuner.restore`` cannot read."""
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        raise UserError(
            f"{sweep_dir}: no Tune experiment state (experiment_state-*.json), so the sweep "
            "cannot be resumed; its MLflow runs are kept — run the experiment again to redo it"
        )
    try:
        json.loads(states[-1].read_text())  # Tune reads the newest
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{states[-1]}: damaged Tune experiment state ({exc}); the sweep cannot be resumed "
            "from it (its MLflow runs and checkpoints are untouched)"
        ) from None
    tuner = sweep_dir / "tuner.pkl"
    if not tuner.is_file() or tuner.stat().st_size == 0:
        raise UserError(f"{tuner}: missing or empty; the sweep cannot be resumed from it")


def resume(name_or_path: str, address: str | None = None) -> SweepOutcome:
    """Continue an interrupted sweep: finished trials stay, the others go on from checkpoints."""
    sweep_dir = find_sweep_dir(name_or_path)
    try:
        setup = SweepSetup.from_json(json.loads((sweep_dir / MANIFEST).read_text()))
    except (json.JSONDecodeError, TypeError, KeyError, ValidationError) as exc:
        raise UserError(f"{sweep_dir / MANIFEST}: damaged sweep manifest ({exc})") from None
    check_tune_state(sweep_dir)
    tracking.check_reachable(setup.uri)
    init_ray(address)
    return _execute(setup, sweep_dir, restore=True)


def finish(outcome: SweepOutcome, error: str | None = None) -> None:
    """Close the parent run of a sweep that ran to its end."""
    if outcome.status == "FINISHED":
        tracking.end_run(
            outcome.setup.uri, outcome.setup.parent_run_id, "FAILED" if error else "FINISHED", error
        )
