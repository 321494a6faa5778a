"""The driver's side of one sweep, start to end: :class:`SweepSession`.

:meth:`SweepSession.run` walks these steps, in this order, each once:

1. choose the tracking URI (:func:`tracking.tracking_uri`: ``--tracking-uri``, then
   ``MLFLOW_TRACKING_URI``, then the config's ``tracking.uri``, then ``./mlflow.db``);
2. check this machine's devices (a local Ray cannot give trials GPUs it lacks) and that the
   tracking store can be reached;
3. answer the config's ``{runs: …}`` queries and ``run:ID/ARTIFACT`` references;
4. prepare the data (the trainer fetches it once, here, before Ray starts);
5. start or join Ray, refuse a store that other nodes cannot reach, find the MLflow experiment;
6. open the sweep's parent run, split the grid into packs (``pack``), write the manifest
   ``dynsweep_sweep.json`` that ``resume`` reads;
7. run the ``Tuner`` (:mod:`orchestrator.sweep`), then close the trials' runs left open;
8. summarise (printed; the best metric and the table logged on the parent run), then analyse
   a finished sweep (:mod:`analysis.runner`), while the parent run is still open;
9. close the parent run, in ``finally``: FINISHED, FAILED with the error (a searcher that
   cannot be built, Tune, no trial placed in time, the summary, the analysis), or KILLED on
   an interrupt (``dynsweep resume`` continues it).

``resume`` (:meth:`SweepSession.resuming`) reads steps 1, 3, 4 and 6 from the manifest, checks
that Tune's state can be restored, and walks 2, 5, then 7–9 with the Tuner restored and the
parent run reopened. MPI ``train`` (:mod:`orchestrator.mpi`) walks 1–4 (:meth:`preflight`; its
ranks check their own devices), opens its parent run and closes it by the same steps, without
Tune.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import tracking
from orchestrator import chain, space
from orchestrator.context import SweepSetup
from orchestrator.devices import check_local, per_trial
from orchestrator.driver import INTERRUPTED, interruptible, quiet_tune
from orchestrator.nodes import check_multi_node, worker_nodes
from orchestrator.plan import member_cap, slots
from orchestrator.progress import PendingWatch
from orchestrator.spec import ExperimentSpec
from orchestrator.storage import SweepFolder, describe
from orchestrator.sweep import (
    SweepOutcome,
    check_tune_state,
    find_sweep_folder,
    init_ray,
    make_tuner,
    new_folder,
    read_manifest,
    write_manifest,
)
from tracking import tags as tag
from trainers import get_trainer_class

Show = Callable[[str], None]


class SweepSession:
    """One sweep on the driver, from its config to its closed parent run (see the module's
    docstring for the steps). ``show`` prints the summary and the analysis (``print``; a
    benchmark passes a no-op); ``analyze=False`` skips the analysis steps."""

    def __init__(
        self,
        spec: ExperimentSpec,
        *,
        address: str | None = None,
        tracking_uri: str | None = None,
        analyze: bool = True,
        show: Show = print,
    ):
        self.spec, self.address, self.analyze, self.show = spec, address, analyze, show
        self.uri = tracking.tracking_uri(tracking_uri, spec.tracking.uri)  # 1
        self.restore = False
        self.tags: dict[str, str] = {}  # the parent run's, which trials copy (setup.tags)
        # Known once the parent run is open (or read from the manifest by ``resuming``):
        self.folder: SweepFolder | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.setup: SweepSetup | None = None

    @classmethod
    def resuming(
        cls,
        name_or_path: str,
        *,
        address: str | None = None,
        storage: str = "dynsweep_runs",
        analyze: bool = True,
        show: Show = print,
    ) -> SweepSession:
        """The session of an interrupted sweep, from its folder's manifest (a path or URI, a
        folder name or an experiment name under ``storage``): finished trials stay, the
        others go on from their checkpoints. Any machine that reaches the sweep's storage
        (and tracking store) can resume it."""
        folder = find_sweep_folder(name_or_path, storage)
        setup = read_manifest(folder)
        check_tune_state(folder)
        session = cls(
            setup.spec, address=address, tracking_uri=setup.uri, analyze=analyze, show=show
        )
        session.tags = setup.tags  # (its uri: the manifest's, chosen above)
        session.restore, session.folder, session.setup = True, folder, setup
        session.experiment_id, session.parent_run_id = setup.experiment_id, setup.parent_run_id
        return session

    def run(self) -> SweepOutcome:
        """The whole walk; the parent run is closed when this returns or raises."""
        self.preflight(data=not self.restore)  # 2–4
        nodes = self.start_ray()  # 5
        check_multi_node(self.uri, None, nodes)  # a sqlite file, before anything is written
        if not self.restore:
            self.experiment_id = tracking.ensure_experiment(self.uri, self.spec.experiment_name())
        check_multi_node(self.uri, tracking.artifact_location(self.uri, self.experiment_id), nodes)
        if not self.restore:
            self.folder = new_folder(self.spec)
            self.open_parent(self.folder.name, self._sweep_tags(), describe(self.folder.location))
        return self.execute()  # 6–9

    # -- 2–4: the checks before anything starts (also MPI `train`'s) --------------------------

    def preflight(self, devices: bool = True, data: bool = True) -> ExperimentSpec:
        """Steps 2–4: devices (unless ``devices`` is false: MPI ranks check their own), the
        store, the config's queries and references (once: a resumed sweep's manifest holds
        them answered), the data (when ``data``). The answered spec is kept and returned."""
        if devices:
            check_local(self.spec, self.address)  # refused before anything starts
        tracking.check_reachable(self.uri)
        if not self.restore:
            self.spec = resolve_config(self.spec, self.uri)
        if data:
            prepare_data(self.spec)
        return self.spec

    def start_ray(self) -> int:
        """Step 5: Ray started or joined; the nodes that can run trials."""
        init_ray(self.address)
        return worker_nodes()

    # -- 6: the parent run ---------------------------------------------------------------------

    def _sweep_tags(self) -> dict[str, str]:
        spec = self.spec
        return {
            tag.GIT_SHA: tracking.git_sha(),
            tag.CONFIG_HASH: spec.config_hash(),
            tag.SEED: json.dumps(spec.seed),
            **tracking.environment_tags(),
        }

    def open_parent(self, name: str, tags: dict[str, str], sweep_dir: str | None = None) -> str:
        """Open the sweep's parent run (from here on, :meth:`close` must end it)."""
        if self.experiment_id is None:
            self.experiment_id = tracking.ensure_experiment(self.uri, self.spec.experiment_name())
        self.tags = tags
        extra = {tag.SWEEP_DIR: sweep_dir} if sweep_dir else {}
        self.parent_run_id = tracking.start_sweep_run(
            self.uri, self.experiment_id, name, self.spec.resolved(), {**tags, **extra}
        )
        return self.parent_run_id

    def _write_setup(self) -> SweepSetup:
        """The new sweep's packs (``pack``) and manifest, under its open parent run."""
        spec, packs = self.spec, None
        if spec.pack != 1:
            from orchestrator.packing import make_packs

            packs = make_packs(spec, slots(spec), member_cap(spec)[0])
        setup = SweepSetup(
            spec,
            self.uri,
            self.experiment_id,
            self.parent_run_id,
            str(Path(spec.data_dir).resolve()),
            self.tags,
            packs,
            self.folder.location,
        )
        write_manifest(self.folder, setup)
        return setup

    # -- 7–9: Tune, the report, the parent run's end -------------------------------------------

    def execute(self) -> SweepOutcome:
        """Steps 6 (packs, manifest) to 9 under the open parent run, closed in every case."""
        started = time.monotonic()
        status, error = "FAILED", None  # every path below sets both before `finally` reads them
        try:
            if self.setup is None:
                self.setup = self._write_setup()
            outcome = self.run_tune(started)
            status, error = outcome.status, outcome.error
            self.report(outcome)  # a failure here fails the sweep (below)
            return outcome
        except BaseException as exc:
            status, error = self.failure(exc)
            self.close_trials(status)
            raise
        finally:
            self.close(status, error)

    def run_tune(self, started: float) -> SweepOutcome:
        """Step 7: fit the Tuner (new or restored), then close the trials' runs still open:
        interrupted ones (KILLED: resume continues them) or ones whose process died without
        a word (FAILED)."""
        setup, folder = self.setup, self.folder
        watch = PendingWatch(per_trial(setup.spec), setup.spec.resources.schedule_timeout_s)
        tuner = make_tuner(setup, folder, self.restore, watch)  # an Optuna RDB connects here
        if self.restore:
            tracking.reopen_run(self.uri, self.parent_run_id)
        try:
            with interruptible(), quiet_tune():
                tuner.fit()
            unfinished = INTERRUPTED.is_set()
        except KeyboardInterrupt:
            unfinished = True
        if watch.expired:
            status, error = "FAILED", watch.expired
        elif unfinished:
            status, error = "KILLED", self._interrupted()
        else:
            status, error = "FINISHED", None
        self.close_trials("KILLED" if status == "KILLED" else "FAILED")
        return SweepOutcome(folder, setup, status, time.monotonic() - started, error)

    def report(self, outcome: SweepOutcome) -> None:
        """Step 8: the summary (shown, and logged on the parent run), then a finished
        sweep's analysis (shown)."""
        from analysis.runner import analyze
        from orchestrator.summary import analysis_text, record_summary, summarize_sweep
        from tracking.secrets import redact

        summary = summarize_sweep(outcome)
        self.show(redact(summary.text))
        record_summary(self.uri, self.parent_run_id, summary)
        spec = self.spec
        if outcome.status == "FINISHED" and spec.analysis and self.analyze:
            outcomes = analyze(
                spec.experiment_name(),
                spec.analysis,
                self.uri,
                sweep=self.parent_run_id,
                data_dir=self.setup.data_dir,
                gpus=spec.resources.analysis_gpus,
            )
            self.show(analysis_text(outcomes))

    def failure(self, exc: BaseException) -> tuple[str, str]:
        """The parent run's status and error for an exception that ends the sweep."""
        if isinstance(exc, KeyboardInterrupt):  # Ctrl+C outside Tune (its set-up, the report)
            return "KILLED", self._interrupted()
        return "FAILED", f"{type(exc).__name__}: {exc}"

    def _interrupted(self) -> str:
        if self.folder is None:
            return "interrupted"
        return f"interrupted; continue with: dynsweep resume {describe(self.folder.location)}"

    def close_trials(self, status: str) -> None:
        tracking.end_unfinished_children(self.uri, self.experiment_id, self.parent_run_id, status)

    def close(self, status: str, error: str | None = None) -> None:
        """Step 9: end the parent run with its status (and the error, as its note)."""
        tracking.end_run(self.uri, self.parent_run_id, status, error)


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
