"""Paths then subspace sampling, the second sweep referring to the first one's runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dynsweep.errors import ConfigError
from orchestrator import references
from tests.helpers import BASE, merge, run_cli, store, sweep_runs

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def write(folder, name, trainer, config, **extra):
    spec = merge({**BASE, "config": config}, {"name": name, "trainer": trainer, **extra})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_stages_run_from_one_command_the_second_drawing_on_the_first(ray_session, workdir):
    """``dynsweep sweep paths.yaml subspace.yaml``: the subspace stage samples around every
    path of the sweep the paths stage has just finished (a ``{runs: …}`` query)."""
    paths = write(
        workdir,
        "paths",
        "paths",
        {"order": 2, "width": 8, "lr": 0.02},
        metric="val/best_loss",
        mode="min",
        stop={"iterations": 60},
        loop={"report_every": 20, "eval_every": 30, "checkpoint_every": 30},
        seed={"grid": [0, 1]},
    )
    sub = write(
        workdir,
        "subspace",
        "subspace",
        {
            "path_model": {"runs": {"experiment": "paths", "artifact": "model/model.pt"}},
            "space": "varphi",
            "chains": 2,
            "warmup": 15,
            "draws": 20,
        },
        metric="val/lppd",
        mode="max",
        stop={"iterations": 70},
        loop={"report_every": 10, "eval_every": 70, "checkpoint_every": 70},
    )
    assert run_cli("sweep", str(paths), str(sub)) == 0
    client = store(workdir)
    _, runs = sweep_runs(client, "paths")
    refs = [f"run:{r.info.run_id}/model/model.pt" for r in runs]
    _, sampled = sweep_runs(client, "subspace")
    assert len(sampled) == 2 and all(r.info.status == "FINISHED" for r in sampled)
    assert all("val/elpd_loo" in r.data.metrics for r in sampled)
    # The params record where each trial's curve came from (the resolved local file).
    assert {r.data.params["config.path_model"] for r in sampled} == {
        references.resolve(ref, f"sqlite:///{workdir / 'mlflow.db'}") for ref in refs
    }


def test_a_bad_run_reference_names_the_field(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()  # create the store
    for bad, match in [
        ("run:abc", "expected run:RUN_ID/ARTIFACT_PATH"),
        ("run:0123456789abcdef/model/model.pt", "not found"),
    ]:
        with pytest.raises(ConfigError, match=rf"config\.x\.grid\.0: .*{match}"):
            references.resolve({"x": {"grid": [bad]}}, uri)


def test_the_shipped_mode_connectivity_study_runs_with_one_command(ray_session, workdir):
    """configs/paths_digits_endpoints.yaml then configs/paths_digits_connectivity.yaml, as
    shipped (shorter): the curves end at the two networks the first stage trained."""
    configs = [
        str(ROOT / "configs" / f"paths_digits_{n}.yaml") for n in ("endpoints", "connectivity")
    ]
    short = ["stop.iterations=20", "loop.eval_every=10", "loop.checkpoint_every=10"]
    argv = [a for s in short for a in ("--set", s)]
    assert run_cli("sweep", *configs, *argv, "--set", "2:config.order={grid: [1, 2]}") == 0
    client = store(workdir)
    _, ends = sweep_runs(client, "paths_digits_endpoints")
    _, curves = sweep_runs(client, "paths_digits_connectivity")
    assert len(curves) == 4 and all(r.info.status == "FINISHED" for r in curves)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    want = sorted(references.resolve(f"run:{r.info.run_id}/model/model.pt", uri) for r in ends)
    for run in curves:
        assert sorted(json.loads(run.data.params["config.endpoints"])) == want
