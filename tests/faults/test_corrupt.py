"""Damaged files: a truncated checkpoint, a truncated trajectory chunk, a damaged Tune
experiment state. Each gets an error naming the file; the rest of the data stays usable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from analysis.io import load_trajectory
from dynsweep.errors import DataError
from orchestrator.checkpoints import resume_state
from tests.helpers import history, run_cli, store, sweep_runs, write_config


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_session):
    """A finished 2-trial sweep recording weights, with a weight_pca analysis step."""
    folder = tmp_path_factory.mktemp("corrupt")
    cfg = write_config(
        folder,
        config={"optimizer": {"lr": {"grid": [0.02, 0.05]}}},
        loop={"record": [{"probe": "weights"}]},
        analysis=[{"step": "weight_pca", "input": "weights", "params": {"components": 2}}],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert run_cli("sweep", str(cfg), "--no-analyze") == 0
    return folder, cfg


@pytest.mark.e2e
def test_a_truncated_trajectory_chunk_is_named_and_the_rest_stays_readable(
    finished, capsys, monkeypatch
):
    folder, cfg = finished
    client = store(folder)
    _, children = sweep_runs(client)
    damaged, intact = sorted(children, key=lambda c: c.info.run_name)
    artifacts = Path(urlparse(damaged.info.artifact_uri).path)
    [chunk] = (artifacts / "trajectories/weights").glob("c000-000000016-*[0-9].npy")
    before = history(client, damaged.info.run_id, "train/loss")
    truncate(chunk)

    with pytest.raises(DataError, match=f"{chunk}: unreadable trajectory chunk"):
        load_trajectory(damaged.info.run_id, "weights", uri=client.tracking_uri)
    # The other chunks of that run still read.
    head = load_trajectory(
        damaged.info.run_id, "weights", steps=slice(0, 16), uri=client.tracking_uri
    )
    np.testing.assert_array_equal(head.steps, np.arange(16))

    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert run_cli("analyze", str(cfg)) == 0
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if damaged.info.run_name in ln]
    assert "DataError" in line and str(chunk) in line, out
    after = {c.info.run_id: c for c in sweep_runs(client)[1]}
    assert (
        "analysis/weight_pca/layers.1.0.bias/explained_1" in after[intact.info.run_id].data.metrics
    )
    assert not any(k.startswith("analysis/") for k in after[damaged.info.run_id].data.metrics)
    assert history(client, damaged.info.run_id, "train/loss") == before  # metrics untouched


@pytest.mark.e2e
def test_a_damaged_tune_state_is_named_before_ray_starts(finished, tmp_path, capsys, no_ray):
    folder, _ = finished
    [sweep_dir] = (folder / "dynsweep_runs").iterdir()
    copy = tmp_path / sweep_dir.name
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("trial_*"))
    [state] = copy.glob("experiment_state-*.json")
    truncate(state)
    assert run_cli("resume", str(copy)) == 2
    err = capsys.readouterr().err
    assert f"{state}: damaged Tune experiment state" in err and "Traceback" not in err

    state.unlink()
    assert run_cli("resume", str(copy)) == 2
    assert "no Tune experiment state" in capsys.readouterr().err

    manifest = copy / "dynsweep_sweep.json"
    truncate(manifest)
    assert run_cli("resume", str(copy)) == 2
    assert f"{manifest}: damaged sweep manifest" in capsys.readouterr().err
    # The sweep's runs are untouched.
    parents, children = sweep_runs(store(folder))
    assert parents[0].info.status == "FINISHED" and len(children) == 2


def test_a_damaged_newest_checkpoint_is_passed_over_and_all_damaged_is_an_error(tmp_path, caplog):
    trial = "abc12_00003"
    for i, step in enumerate([20, 40, 60]):
        folder = tmp_path / f"trial_{trial}" / f"checkpoint_{i:06d}"
        folder.mkdir(parents=True)
        torch.save({"trial_id": trial, "loop": {"step": step}}, folder / "state.pt")
    # A checkpoint of another trial is not this trial's, whatever its age.
    other = tmp_path / f"trial_{trial}0" / "checkpoint_000000"
    other.mkdir(parents=True)
    torch.save({"trial_id": trial + "0", "loop": {"step": 99}}, other / "state.pt")
    newest = tmp_path / f"trial_{trial}" / "checkpoint_000002" / "state.pt"

    state, damaged = resume_state(str(tmp_path), trial)
    assert state["loop"]["step"] == 60 and damaged == []
    truncate(newest)
    state, damaged = resume_state(str(tmp_path), trial)
    assert "resuming from an older checkpoint" in caplog.text  # logged, for the trial's log
    assert state["loop"]["step"] == 40
    assert len(damaged) == 1 and f"{newest}: unreadable checkpoint" in damaged[0]
    for path in (tmp_path / f"trial_{trial}").glob("*/state.pt"):
        path.write_bytes(b"")
    with pytest.raises(DataError, match="no readable checkpoint"):
        resume_state(str(tmp_path), trial)
    assert json.dumps(str(newest))  # the error text names each file (checked above)
