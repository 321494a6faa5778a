"""A real sweep on digits through Ray Tune and MLflow, read back and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.io import load_trajectory, metric_history
from tests.helpers import run_cli, steps_of, store, sweep_runs, write_config
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, ray_session):
    folder = tmp_path_factory.mktemp("e2e")
    cfg = write_config(
        folder,
        config={
            "optimizer": {"lr": {"grid": [0.05, 0.2]}},
            "model": {"widths": {"grid": [[8], [16]]}},
        },
        loop={"record": [{"probe": "weights", "every": 1}]},
        analysis=[
            {"step": "edm", "input": "train/loss", "params": {"max_E": 4}},
            {"step": "weight_pca", "input": "weights", "params": {"components": 3, "batch": 16}},
        ],
    )
    import os

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = run_cli("sweep", str(cfg))
    finally:
        os.chdir(cwd)
    assert code == 0
    return folder


def test_one_parent_with_four_finished_children(finished_sweep):
    client = store(finished_sweep)
    parents, children = sweep_runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    parent_id = parents[0].info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    grid = {
        (c.data.params["config.optimizer.lr"], c.data.params["config.model.widths"])
        for c in children
    }
    assert grid == {("0.05", "[8]"), ("0.05", "[16]"), ("0.2", "[8]"), ("0.2", "[16]")}
    for c in children:
        assert c.data.params["config.batch_size"] == "32"  # defaults resolved, not only overrides
        for tag in (
            "dynsweep.git_sha",
            "dynsweep.config_hash",
            "dynsweep.seed",
            "dynsweep.torch",
            "dynsweep.ray",
            "dynsweep.trial_id",
        ):
            assert c.data.tags.get(tag), tag
        assert c.data.tags["dynsweep.stop_reason"] == "iterations"
    assert "best/val/acc" in parents[0].data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"spec.json", "trials.json"} <= artifacts


def test_full_metric_histories_without_duplicates(finished_sweep):
    client = store(finished_sweep)
    _, children = sweep_runs(client)
    assert len(children) == 4  # (a loop over none would pass)
    for c in children:
        np.testing.assert_array_equal(
            steps_of(client, c.info.run_id, "train/loss"), np.arange(1, 41)
        )
        np.testing.assert_array_equal(steps_of(client, c.info.run_id, "val/acc"), [0, 20, 40])
        steps, values = metric_history(c.info.run_id, "train/loss", uri=client.tracking_uri)
        assert np.all(np.isfinite(values)) and len(steps) == 40


def test_trajectory_holds_the_weights_of_each_step(finished_sweep):
    client = store(finished_sweep)
    _, children = sweep_runs(client)
    run = next(
        c
        for c in children
        if c.data.params["config.model.widths"] == "[8]"
        and c.data.params["config.optimizer.lr"] == "0.2"
    )
    traj = load_trajectory(run.info.run_id, "weights", uri=client.tracking_uri)
    n_params = 64 * 8 + 8 + 8 * 10 + 10
    assert traj.values.shape == (41, n_params)
    np.testing.assert_array_equal(traj.steps, np.arange(41))

    model = torch.load(
        client.download_artifacts(run.info.run_id, "model/model.pt"), weights_only=True
    )
    assert model["step"] == 40 and model["config"]["optimizer"]["lr"] == 0.2
    final = torch.cat([t.reshape(-1) for t in model["state"]["model"].values()]).numpy()
    np.testing.assert_array_equal(traj.values[40], final)

    # The same config and seed, trained here for 13 steps, gives the row of step 13.
    torch.set_num_threads(1)
    cfg = ClassifierConfig.model_validate(model["config"])
    again = ClassifierTrainer(cfg)
    fit(
        again,
        LocalContext(finished_sweep / "again", seed=int(run.data.params["seed"])),
        LoopConfig(),
        StopRule(iterations=13),
    )
    mine = torch.cat([p.detach().reshape(-1) for p in again.model.parameters()]).numpy()
    np.testing.assert_allclose(traj.values[13], mine, rtol=1e-5, atol=1e-6)
    part = load_trajectory(run.info.run_id, "weights", steps=slice(10, 20), uri=client.tracking_uri)
    np.testing.assert_array_equal(part.values, traj.values[10:20])


def test_analysis_metrics_are_written_to_each_run(finished_sweep):
    client = store(finished_sweep)
    _, children = sweep_runs(client)
    assert len(children) == 4  # (a loop over none would pass)
    for c in children:
        best_e = c.data.metrics["analysis/edm/best_E"]
        assert best_e in {1.0, 2.0, 3.0, 4.0}
        assert -1.0 <= c.data.metrics["analysis/edm/rho"] <= 1.0
        assert "analysis/edm/rho_by_E.json" in {
            a.path for a in client.list_artifacts(c.info.run_id, "analysis/edm")
        }


def test_parent_run_holds_the_sweep_table_joined_with_hyperparameters(finished_sweep):
    import csv
    import io

    client = store(finished_sweep)
    parents, children = sweep_runs(client)
    parent = parents[0].info.run_id
    path = client.download_artifacts(parent, "analysis/summary.csv", str(finished_sweep))
    text = Path(path).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4
    by_id = {c.info.run_id: c for c in children}
    for row in rows:
        run = by_id[row["run_id"]]
        assert row["config.optimizer.lr"] == run.data.params["config.optimizer.lr"]
        assert float(row["analysis/edm/best_E"]) == run.data.metrics["analysis/edm/best_E"]
        assert "analysis/weight_pca/layers.1.0.weight/rank" in row
    plots = {a.path for a in client.list_artifacts(parent, "analysis")}
    assert "analysis/by_config.optimizer.lr.png" in plots


def test_analyze_again_keeps_results_unless_forced(finished_sweep, capsys, monkeypatch):
    monkeypatch.chdir(finished_sweep)
    assert run_cli("analyze", "experiment.yaml") == 0
    out = capsys.readouterr().out
    assert out.count("(kept: same step config)") == 8  # 4 runs × 2 steps
    force = ["--force", "--set", "analysis=[{step: edm, params: {max_E: 3}}]"]
    assert run_cli("analyze", "experiment.yaml", *force) == 0
    out = capsys.readouterr().out
    assert "(kept" not in out and out.count("best_E") == 4, out


def test_runs_command_prints_and_exports(finished_sweep, capsys, monkeypatch):
    monkeypatch.chdir(finished_sweep)
    assert run_cli("runs", "t", "--sort", "val/acc", "--mode", "max", "--csv", "runs.csv") == 0
    out = capsys.readouterr().out
    assert out.count("FINISHED") == 4 and "val/acc" in out
    lines = (finished_sweep / "runs.csv").read_text().strip().splitlines()
    assert len(lines) == 5 and "config.optimizer.lr" in lines[0]
    assert run_cli("runs", "nope") == 2


def test_each_trial_keeps_a_learning_curve_figure_of_its_whole_history(finished_sweep):
    from PIL import Image

    client = store(finished_sweep)
    _, children = sweep_runs(client)
    assert len(children) == 4  # (a loop over none would pass)
    for c in children:
        path = client.download_artifacts(c.info.run_id, "figures/learning_curves.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
