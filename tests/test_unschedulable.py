"""A trial a cluster cannot place: the sweep says so once, and fails after its wait."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import store, sweep_runs, write_config

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a Ray without GPUs")
def test_a_sweep_whose_trials_cannot_be_placed_fails_after_its_wait(ray_session, workdir, capfd):
    from orchestrator.session import SweepSession
    from orchestrator.spec import load_spec

    cfg = write_config(workdir, resources={"gpus": 1, "schedule_timeout_s": 4})
    session = SweepSession(load_spec(cfg), address="auto")  # a cluster: not refused up front
    outcome = session.run()
    assert outcome.status == "FAILED"
    assert "not scheduled within 4 s" in outcome.error and "each need 1 CPU, 1 GPU" in outcome.error
    err = capfd.readouterr().err
    assert err.count("no trial can be placed") == 1
    assert "No available node types can fulfill" not in err
    parents, _ = sweep_runs(store(workdir))
    (parent,) = parents
    assert parent.info.status == "FAILED"
    assert "not scheduled within 4 s" in parent.data.tags["mlflow.note.content"]
