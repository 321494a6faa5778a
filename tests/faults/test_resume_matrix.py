"""Every searcher and scheduler resumes after the driver is SIGKILLed (issue 29).

Each case runs 3 trials of the cheap ``gated`` trainer, 2 at a time. Every trial waits at its
last step: the sweep's first trial until the test has seen the other one pass two checkpoints,
the others until the driver is dead. The first one finishes, and the driver SIGKILLs itself
(the test-only ``DYNSWEEP_TEST_KILL_DRIVER``, see ``orchestrator.driver.kill_point``) in a
chosen window between two saves of Tune's state:

- ``trial_complete:1``: just after the searcher was told the first result (an Optuna study
  on a database holds it COMPLETE) and before Tune saved that the trial finished;
- ``searcher_ask:3``: just after the Optuna searcher asked its study for the third trial
  (RUNNING there), before Tune created or saved it — also after the first was told.

Then ``dynsweep resume`` must finish the sweep: exactly 3 runs (grid: its 3 points), each
FINISHED (or stopped by its scheduler, with the reason), every metric step stored once; the
trial that ran at the kill continues from its checkpoint in its own run (one attempt more); an
Optuna study holds one COMPLETE/PRUNED trial per run, none RUNNING, and its best trial is
the best run in MLflow.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import signal
from pathlib import Path

import optuna
import pytest
import yaml

from orchestrator.driver import KILL_ENV
from tests.helpers import BASE, history, run_cli, start_driver, store, sweep_runs, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]

STEPS, CHECKPOINT_EVERY, TRIALS = 24, 4, 3
TOLD, ASKED = "trial_complete:1", "searcher_ask:3"
RANGE = {"uniform": [0.0, 1.0]}
OPTUNA = {"algorithm": "optuna", "seed": 0}

# name: (search, x, scheduler, Optuna storage, kill). The `searcher_ask` window on sqlite is
# covered without Ray by tests/orchestrator/test_optuna_resume.py.
CASES = {
    "grid": ({"algorithm": "grid"}, {"grid": [0.1, 0.5, 0.9]}, "fifo", None, TOLD),
    "random": ({"algorithm": "random", "seed": 0}, RANGE, "fifo", None, TOLD),
    "optuna-memory": (OPTUNA, RANGE, "fifo", None, TOLD),
    "optuna-sqlite-told": (OPTUNA, RANGE, "fifo", "sqlite", TOLD),
    "optuna-postgres-asked": (OPTUNA, RANGE, "fifo", "postgres", ASKED),
    "asha": ({"algorithm": "random", "seed": 0}, RANGE, "asha", None, TOLD),
    "pbt": ({"algorithm": "random", "seed": 0}, RANGE, "pbt", None, TOLD),
}


@pytest.fixture(scope="module")
def postgres_uri():
    from tests.services import postgres

    with postgres() as uri:
        yield uri


def write_sweep(workdir: Path, search: dict, x: dict, scheduler: str) -> Path:
    spec = {
        **{k: v for k, v in BASE.items() if k != "config"},
        "trainer": "gated",
        "config": {"x": x, "marker_dir": str(workdir), "gate_step": STEPS, "step_sleep_s": 0.1},
        "metric": "train/loss",
        "mode": "min",
        "num_samples": 1 if search["algorithm"] == "grid" else TRIALS,
        "search": search,
        "scheduler": {
            "name": scheduler,
            "grace_period": 2 * CHECKPOINT_EVERY,
            "reduction_factor": 2,
            "perturbation_interval": 3 * CHECKPOINT_EVERY,
        },
        "stop": {"iterations": STEPS},
        "loop": {
            "report_every": 2,
            "checkpoint_every": CHECKPOINT_EVERY,
            "eval_every": STEPS,
            "learning_curves": False,
        },
        "max_concurrent_trials": 2,
    }
    path = workdir / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def logged(run) -> int:
    return int(run.data.tags.get("dynsweep.logged_step", "-1"))


def two_running_past_checkpoints(client, proc) -> bool:
    """Both running trials stored ≥ 2 checkpoints' steps (both wait at STEPS - 1), or the
    driver is gone already (a scheduler stopped the other trial: its completion killed it)."""
    running = [c for c in sweep_runs(client)[1] if c.info.status == "RUNNING"]
    if proc.poll() is not None:
        return True
    return len(running) == 2 and min(logged(c) for c in running) >= 2 * CHECKPOINT_EVERY


def pids_alive(workdir: Path) -> list[int]:
    alive = []
    for path in workdir.glob("pid-*"):
        pid = int(path.name[4:])
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def resumes(workdir: Path) -> list[dict]:
    path = workdir / "resumed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def saved_statuses(sweep_dir: str) -> dict[str, str]:
    """Trial id → status in Tune's newest saved experiment state."""
    state = sorted(glob.glob(os.path.join(sweep_dir, "experiment_state-*.json")))[-1]
    trials = [json.loads(t) for t, _ in json.loads(Path(state).read_text())["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def final_loss(client, run) -> float:
    return client.get_run(run.info.run_id).data.metrics["train/loss"]


def load_study(storage: str | None, sweep_dir: str) -> optuna.Study:
    """The sweep's study: from its database, or (in memory) from the searcher state that Tune
    saved at the end of the resumed sweep (the newest of its sessions' files)."""
    if storage:
        return optuna.load_study(study_name="matrix", storage=storage)
    state = sorted(glob.glob(os.path.join(sweep_dir, "searcher-state-*.pkl")))[-1]
    with open(state, "rb") as f:
        return pickle.load(f)["_ot_study"]


@pytest.mark.parametrize("case", list(CASES))
def test_driver_killed_in_a_window_then_resumed(case, workdir, ray_session, request):
    search, x, scheduler, db, kill = CASES[case]
    storage = None
    if db == "sqlite":
        storage = f"sqlite:///{workdir / 'optuna.db'}"
    elif db == "postgres":
        storage = request.getfixturevalue("postgres_uri")
    if storage:
        search = {**search, "storage": storage, "study_name": "matrix"}
    cfg = write_sweep(workdir, search, x, scheduler)
    address = ray_session.get_runtime_context().gcs_address
    proc = start_driver(workdir, cfg, address, env={KILL_ENV: kill})
    client = store(workdir)
    try:
        wait = "2 trials past checkpoints"
        wait_for(lambda: two_running_past_checkpoints(client, proc), 180, wait)
        (workdir / "go").touch()  # the first trial finishes; the driver kills itself
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, out
    # Ray ends the dead driver's trial processes; none may log beside the resumed ones.
    wait_for(lambda: not pids_alive(workdir), 90, "the killed driver's trials to stop")
    (workdir / "release").touch()  # the other trials may finish, once resumed

    parents, children = sweep_runs(client)
    sweep_dir, sweep_id = parents[0].data.tags["dynsweep.sweep_dir"], parents[0].info.run_id
    before = {c.info.run_id: c for c in children}
    finished_before = {i for i, c in before.items() if c.info.status == "FINISHED"}
    interrupted = [c for c in children if c.info.status == "RUNNING"]
    assert len(finished_before) == 1 and len(interrupted) == 1, [
        (c.info.status, logged(c)) for c in children
    ]
    at_kill = logged(interrupted[0])
    assert 2 * CHECKPOINT_EVERY <= at_kill < STEPS
    resumed_before = len(resumes(workdir))
    # The window was hit: Tune's saved state is behind what the trials and the study hold.
    saved = saved_statuses(sweep_dir)
    [first] = [before[i].data.tags["dynsweep.trial_id"] for i in finished_before]
    if kill == TOLD:  # finished (and told), but saved as unfinished
        assert saved.get(first) not in (None, "TERMINATED"), saved
    if storage:
        study = optuna.load_study(study_name="matrix", storage=storage)
        by_trial = {t.user_attrs["dynsweep.trial_id"]: t.state.name for t in study.trials}
        assert by_trial[first] == "COMPLETE", by_trial
        if kill == ASKED:  # asked for a third trial that Tune never saved
            assert [i for i, st in by_trial.items() if i not in saved] != [], (by_trial, saved)
            assert list(by_trial.values()).count("RUNNING") == 2, by_trial

    assert run_cli("resume", sweep_dir) == 0

    parents, children = sweep_runs(client)
    assert parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS, "exactly num_samples (grid: its points) runs"
    for c in children:
        steps = history(client, c.info.run_id, "train/loss")
        assert sorted(steps) == list(range(1, logged(c) + 1)), c.info.run_name  # each once
        stopped = c.data.tags.get("dynsweep.stop_reason")
        assert c.info.status == "FINISHED", (c.info.run_name, c.data.tags.get("dynsweep.error"))
        assert logged(c) == STEPS or stopped == "scheduler", (c.info.run_name, stopped)
        if c.info.run_id in finished_before:  # not run again
            old = before[c.info.run_id]
            assert c.data.tags["dynsweep.attempts"] == old.data.tags["dynsweep.attempts"]
            assert c.info.end_time == old.info.end_time
    # The trial that ran at the kill went on in its own run from a checkpoint, not step 0.
    [again] = [c for c in children if c.info.run_id == interrupted[0].info.run_id]
    attempts = int(interrupted[0].data.tags["dynsweep.attempts"])
    now = int(again.data.tags["dynsweep.attempts"])
    assert now == attempts + 1 or (scheduler == "pbt" and now > attempts)  # + PBT's exploits
    starts = [r["step"] for r in resumes(workdir)[resumed_before:]]
    assert any(0 < s <= at_kill and s % CHECKPOINT_EVERY == 0 for s in starts), starts

    if search["algorithm"] != "optuna":
        return
    study = load_study(storage, sweep_dir)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states, states
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    runs = {c.data.tags["dynsweep.trial_id"]: c for c in children}
    # One finished study trial per run, each told once (a second tell would have failed).
    assert sorted(t.user_attrs["dynsweep.trial_id"] for t in done) == sorted(runs)
    assert all(t.user_attrs["dynsweep.sweep"] == sweep_id for t in done)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    # A trial asked just before the kill (never created by Tune) is ended, with the reason.
    assert len(failed) == (1 if kill == ASKED else 0), states
    assert all("dynsweep.ended" in t.user_attrs for t in failed)
    for t in done:
        assert t.value == pytest.approx(final_loss(client, runs[t.user_attrs["dynsweep.trial_id"]]))
    best_run = min(children, key=lambda c: final_loss(client, c))
    assert (
        study.best_trial.user_attrs["dynsweep.trial_id"] == best_run.data.tags["dynsweep.trial_id"]
    )
