"""Runs queries (``{runs: …}``) against a real sqlite MLflow store, and stage overrides."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import tracking
from dynsweep.errors import ConfigError, UserError
from orchestrator import chain, space
from orchestrator.spec import load_spec
from tests.helpers import BASE, merge


def _sweep(uri: str, experiment: str, runs: list[tuple[str, str, dict, dict]]) -> list[str]:
    """A sweep parent and its trial runs: (name, status, params, metrics) each; their ids."""
    exp = tracking.ensure_experiment(uri, experiment)
    parent = tracking.start_sweep_run(uri, exp, f"{experiment}-sweep", {"name": experiment}, {})
    client = MlflowClient(uri)
    ids = []
    for name, status, params, metrics in runs:
        run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent})
        for k, v in params.items():
            client.log_param(run.info.run_id, k, v)
        for k, v in metrics.items():
            client.log_metric(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, status)
        ids.append(run.info.run_id)
    return ids


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('chain') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def paths_runs(uri):  # one store for the module: creating one takes seconds
    return _sweep(
        uri,
        "paths",
        [
            (
                "a",
                "FINISHED",
                {"config.order": "2", "config.activation": "relu"},
                {"val/loss": 0.3},
            ),
            (
                "b",
                "FINISHED",
                {"config.order": "4", "config.activation": "relu"},
                {"val/loss": 0.1},
            ),
            ("c", "FINISHED", {"config.order": "4", "config.activation": "elu"}, {"val/loss": 0.2}),
            ("d", "FAILED", {"config.order": "2", "config.activation": "relu"}, {"val/loss": 0.0}),
        ],
    )


def _answer(uri, **query):
    return chain.answer(chain.RunsQuery(**query), uri, "config.x.runs")


def test_a_query_draws_finished_runs_as_a_grid_of_run_references(uri, paths_runs):
    a, b, c, _failed = paths_runs
    assert _answer(uri, experiment="paths") == {
        "grid": [f"run:{i}/model/model.pt" for i in (a, b, c)]
    }
    where = _answer(uri, experiment="paths", where={"config.activation": "relu", "config.order": 4})
    assert where == {"grid": [f"run:{b}/model/model.pt"]}
    best = _answer(uri, experiment="paths", best=2, metric="val/loss", artifact="m.pt")
    assert best == {"grid": [f"run:{b}/m.pt", f"run:{c}/m.pt"]}
    worst = _answer(uri, experiment="paths", best=1, metric="val/loss", mode="max", form="list")
    assert worst == [f"run:{a}/model/model.pt"]


def test_a_query_that_finds_too_few_runs_says_which_and_how_to_fix_it(uri, paths_runs):
    with pytest.raises(ConfigError, match=r"config\.x\.runs: expected 2 runs, found 1"):
        _answer(uri, experiment="paths", where={"config.order": 2}, form="list", count=2)
    with pytest.raises(ConfigError, match=r"no runs match.*dynsweep sweep <paths config>"):
        _answer(uri, experiment="paths", where={"config.order": 7})
    with pytest.raises(ConfigError, match=r"config\.x\.runs: experiment 'nope' not found"):
        _answer(uri, experiment="nope")


def test_resolve_replaces_each_query_where_it_stands(uri, paths_runs):
    config = {"path_model": {"runs": {"experiment": "paths", "best": 1, "metric": "val/loss"}}}
    out = chain.resolve(config, uri)
    assert out == {"path_model": {"grid": [f"run:{paths_runs[1]}/model/model.pt"]}}
    assert "runs" in config["path_model"]  # the input is not changed


def _spec(config):
    raw = merge(
        BASE,
        {"trainer": "subspace", "config": config, "metric": "val/lppd", "mode": "max"},
    )
    raw["config"] = config
    return load_spec(raw=raw)


def test_a_spec_with_a_query_validates_before_it_is_answered():
    spec = _spec({"path_model": {"runs": {"experiment": "paths"}}, "space": "line"})
    ((path, query),) = chain.queries(spec.config)
    assert path == ("path_model",) and query.experiment == "paths"
    parsed = spec.parsed_space()["config"]
    assert space.substitute(parsed)["path_model"] == "run:paths/model/model.pt"
    assert space.to_plain(parsed)["path_model"] == {"runs": {"experiment": "paths"}}
    with pytest.raises(ConfigError, match="not answered before Ray"):
        space.to_tune(parsed)
    with pytest.raises(ConfigError, match=r"config\.path_model\.runs\.best: .*greater than"):
        _spec({"path_model": {"runs": {"experiment": "paths", "best": 0}}})
    with pytest.raises(ConfigError, match=r"config\.path_model\.runs: .*best needs a metric"):
        _spec({"path_model": {"runs": {"experiment": "paths", "best": 2}}})
    with pytest.raises(ConfigError, match=r"config\.path_model\.runs\.artefact: Extra inputs"):
        _spec({"path_model": {"runs": {"experiment": "paths", "artefact": "x"}}})


def test_stage_overrides_apply_to_every_stage_or_to_the_one_named():
    items = ["stop.iterations=5", "2:config.order=3", "config.path_model=run:abc/m.pt"]
    assert chain.stage_overrides(items, 1, 2) == [
        "stop.iterations=5",
        "config.path_model=run:abc/m.pt",
    ]
    assert chain.stage_overrides(items, 2, 2) == [
        "stop.iterations=5",
        "config.order=3",
        "config.path_model=run:abc/m.pt",
    ]
    with pytest.raises(UserError, match="stage 3 does not exist"):
        chain.stage_overrides(["3:seed=1"], 1, 2)
