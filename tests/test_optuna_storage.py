"""An Optuna study kept in storage outlives its sweep: the next sweep continues it."""

from __future__ import annotations

import optuna
import pytest

from dynsweep.errors import ConfigError
from orchestrator.spec import load_spec
from tests.helpers import (
    BASE,
    run_cli,
    start_driver,
    store,
    sweep_runs,
    wait_for_progress,
    write_config,
)

pytestmark = pytest.mark.e2e


def test_a_stored_study_keeps_its_trials_across_sweeps(ray_session, workdir, capsys):
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    cfg = write_config(
        workdir,
        config={"optimizer": {"lr": {"choice": [0.01, 0.05, 0.2]}}},
        search={"algorithm": "optuna", "seed": 0, "storage": storage, "study_name": "lr"},
        num_samples=2,
        stop={"iterations": 10},
        loop={"report_every": 5, "checkpoint_every": 10, "eval_every": 10},
    )
    assert run_cli("sweep", str(cfg)) == 0
    assert "optuna-dashboard sqlite:///" in capsys.readouterr().out
    study = optuna.load_study(study_name="lr", storage=storage)
    assert len(study.trials) == 2
    assert run_cli("sweep", str(cfg)) == 0  # a new sweep (or a restart) continues the study
    study = optuna.load_study(study_name="lr", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    parents, children = sweep_runs(store(workdir))
    assert len(parents) == 2 and len(children) == 4


@pytest.mark.parametrize(
    "search, match",
    [
        ({"algorithm": "grid", "storage": "sqlite:///x.db"}, "need algorithm: optuna"),
        ({"algorithm": "optuna", "storage": "optuna.db"}, "expected an RDB URI"),
    ],
)
def test_bad_study_storage_is_named(search, match):
    with pytest.raises(ConfigError, match=rf"search.*{match}"):
        load_spec(raw={**BASE, "search": search})


def test_an_interrupted_optuna_sweep_resumes_the_same_study(workdir, ray_session):
    import signal

    storage = f"sqlite:///{workdir / 'optuna.db'}"
    cfg = write_config(
        workdir,
        config={"optimizer": {"lr": {"choice": [0.01, 0.02, 0.05, 0.1]}}},
        search={"algorithm": "optuna", "seed": 1, "storage": storage, "study_name": "resumed"},
        num_samples=3,
        max_concurrent_trials=1,
        stop={"iterations": 400},
        loop={"report_every": 10, "checkpoint_every": 50, "eval_every": 100},
    )
    address = ray_session.get_runtime_context().gcs_address
    proc = start_driver(workdir, cfg, address)
    client = store(workdir)
    try:
        wait_for_progress(client, finished=1, step=60, timeout=120)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    study = optuna.load_study(study_name="resumed", storage=storage)
    assert len(study.trials) == 2  # one complete, one interrupted
    parents, _ = sweep_runs(client)
    assert run_cli("resume", parents[0].data.tags["dynsweep.sweep_dir"]) == 0
    study = optuna.load_study(study_name="resumed", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3, states  # the same trial, finished
    _, children = sweep_runs(client)
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
