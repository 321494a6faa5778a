"""Optuna (single and multi-objective) and ASHA on tiny spaces, through real sweeps."""

from __future__ import annotations

import pytest

from tests.helpers import history, run_cli, store, sweep_runs, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]


def test_optuna_tpe_single_objective(workdir):
    cfg = write_config(
        workdir,
        search={"algorithm": "optuna", "seed": 3},
        num_samples=4,
        config={
            "optimizer": {"lr": {"loguniform": [0.001, 0.5]}, "name": {"choice": ["sgd", "adam"]}}
        },
        stop={"iterations": 20},
    )
    assert run_cli("sweep", str(cfg)) == 0
    _, children = sweep_runs(store(workdir))
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    lrs = {float(c.data.params["config.optimizer.lr"]) for c in children}
    assert len(lrs) == 4 and all(0.001 <= lr <= 0.5 for lr in lrs)


def test_optuna_multi_objective(workdir):
    cfg = write_config(
        workdir,
        search={
            "algorithm": "optuna",
            "seed": 0,
            "objectives": {"val/acc": "max", "train/loss": "min"},
        },
        num_samples=3,
        config={"optimizer": {"lr": {"uniform": [0.01, 0.3]}}},
        stop={"iterations": 20},
    )
    assert run_cli("sweep", str(cfg)) == 0
    _, children = sweep_runs(store(workdir))
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}


def test_asha_stops_poor_trials_early_and_closes_their_runs(workdir):
    cfg = write_config(
        workdir,
        search={"algorithm": "random", "seed": 1},
        num_samples=8,
        scheduler={"name": "asha", "grace_period": 10, "reduction_factor": 2},
        config={"optimizer": {"lr": {"loguniform": [0.0001, 0.3]}}},
        loop={"eval_every": 10, "report_every": 10},
        stop={"iterations": 40},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    _, children = sweep_runs(client)
    assert len(children) == 8
    assert {c.info.status for c in children} == {"FINISHED"}  # none left RUNNING
    last_steps = {
        c.info.run_id: max(history(client, c.info.run_id, "train/loss")) for c in children
    }
    stopped = [c for c in children if last_steps[c.info.run_id] < 40]
    assert stopped, "ASHA stopped no trial early"
    assert all(c.data.tags["dynsweep.stop_reason"] == "scheduler" for c in stopped)


def test_pbt_keeps_one_run_per_trial_with_contiguous_histories(workdir):
    # Whether PBT exploits within 40 steps depends on timing; what must hold either way is
    # that pauses, exploits and resumes leave one complete run per trial.
    cfg = write_config(
        workdir,
        search={"algorithm": "random", "seed": 0},
        num_samples=4,
        scheduler={"name": "pbt", "perturbation_interval": 20},
        config={"optimizer": {"lr": {"loguniform": [0.001, 0.3]}}},
        loop={"eval_every": 10, "report_every": 10, "checkpoint_every": 20},
        stop={"iterations": 40},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    _, children = sweep_runs(client)
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        steps = history(client, c.info.run_id, "train/loss")
        assert sorted(steps) == list(range(1, 41))
