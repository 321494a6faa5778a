"""Paths then subspace sampling, the second sweep referring to the first one's runs."""

from __future__ import annotations

import pytest
import yaml

from dynsweep.errors import ConfigError
from orchestrator import references
from tests.helpers import BASE, merge, run_cli, store, sweep_runs

pytestmark = pytest.mark.e2e


def write(folder, name, trainer, config, **extra):
    spec = merge({**BASE, "config": config}, {"name": name, "trainer": trainer, **extra})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_subspace_sweep_samples_around_the_paths_of_an_earlier_sweep(ray_session, workdir):
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
    assert run_cli("sweep", str(paths)) == 0
    client = store(workdir)
    _, runs = sweep_runs(client, "paths")
    refs = [f"run:{r.info.run_id}/model/model.pt" for r in runs]
    sub = write(
        workdir,
        "subspace",
        "subspace",
        {"path_model": {"grid": refs}, "space": "varphi", "chains": 2, "warmup": 15, "draws": 20},
        metric="val/lppd",
        mode="max",
        stop={"iterations": 70},
        loop={"report_every": 10, "eval_every": 70, "checkpoint_every": 70},
    )
    assert run_cli("sweep", str(sub)) == 0
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
