"""Eight trials logging at once into one store (a sqlite file; a tracking server): every
metric point arrives, once, and no 'database is locked' reaches the user."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import history, run_cli, sweep_runs, tracking_server, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]

TRIALS, STEPS, EVAL_EVERY = 8, 60, 20


def eight_at_once(workdir):
    return write_config(
        workdir,
        seed={"grid": list(range(TRIALS))},
        resources={"cpus": 2 / TRIALS},
        max_concurrent_trials=TRIALS,
        stop={"iterations": STEPS},
        loop={"report_every": 10, "eval_every": EVAL_EVERY, "checkpoint_every": 50},
    )


def count_points(client: MlflowClient, children) -> int:
    """Check every run's histories point by point; return how many points are stored."""
    train_steps = list(range(1, STEPS + 1))
    eval_steps = list(range(0, STEPS + 1, EVAL_EVERY))
    total = 0
    for run in children:
        for key, expected in [("train/loss", train_steps), ("train/acc", train_steps),
                              ("val/loss", eval_steps), ("val/acc", eval_steps)]:  # fmt: skip
            steps = history(client, run.info.run_id, key)
            assert sorted(steps) == expected, (run.info.run_name, key)  # none lost, none twice
            total += len(steps)
    return total


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_eight_concurrent_trials_lose_no_metric_point(workdir, capfd, where):
    cfg = eight_at_once(workdir)
    if where == "sqlite":
        assert run_cli("sweep", str(cfg)) == 0
        check_store(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), where)
    else:
        with tracking_server(workdir) as uri:  # every query while the server is up
            assert run_cli("sweep", str(cfg), "--tracking-uri", uri) == 0
            check_store(MlflowClient(uri), where)
    out = capfd.readouterr()
    assert "locked" not in (out.out + out.err).lower()


def check_store(client: MlflowClient, where: str) -> None:
    _, children = sweep_runs(client)
    assert len(children) == TRIALS and {c.info.status for c in children} == {"FINISHED"}
    points = count_points(client, children)
    assert points == TRIALS * 2 * (STEPS + len(range(0, STEPS + 1, EVAL_EVERY)))
    print(f"{where}: {points} metric points from {TRIALS} concurrent trials, all stored once")
