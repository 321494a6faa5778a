from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dynsweep.errors import ConfigError
from orchestrator import cli
from orchestrator.spec import apply_overrides, load_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def spec_of(**fields):
    return load_spec(raw={"name": "t", "trainer": "classifier", **fields})


def test_quickstart_is_valid_and_counts_its_grid():
    spec = load_spec(QUICKSTART)
    assert spec.trainer == "classifier"
    assert spec.num_trials() == 4
    assert spec.analysis[0].step == "edm"
    assert [r.probe for r in spec.loop.record] == ["weights"]


def test_defaults_come_from_the_sections():
    spec = spec_of()
    assert spec.search.algorithm == "grid" and spec.scheduler.name == "fifo"
    assert spec.tracking.uri == "sqlite:///mlflow.db"
    assert spec.num_trials() == 1


def test_overrides_set_nested_fields_and_parse_yaml_values():
    spec = load_spec(
        QUICKSTART, ["stop.iterations=7", "config.optimizer.lr={grid: [1, 2, 3]}", "num_samples=2"]
    )
    assert spec.stop.iterations == 7
    assert spec.num_trials() == 2 * 3 * 2
    raw = apply_overrides({}, ["a.b.c=[1, 2]"])
    assert raw == {"a": {"b": {"c": [1, 2]}}}


def test_random_and_optuna_counts():
    assert (
        spec_of(
            search={"algorithm": "random"},
            num_samples=5,
            config={"optimizer": {"lr": {"uniform": [0.01, 0.1]}}},
        ).num_trials()
        == 5
    )
    assert (
        spec_of(
            search={"algorithm": "optuna", "seed": 1},
            num_samples=6,
            config={"optimizer": {"lr": {"loguniform": [0.01, 0.1]}}},
        ).num_trials()
        == 6
    )


@pytest.mark.parametrize(
    "fields, expected",
    [
        (
            {"trainer": "nope"},
            "trainer: unknown trainer 'nope'; expected one of: autoencoder, classifier, diffusion",
        ),
        ({"search": {"algorithm": "bayes"}}, "search.algorithm: unknown search algorithm 'bayes'"),
        (
            {"scheduler": {"name": "hyperband"}},
            "scheduler.name: unknown scheduler 'hyperband'; expected one of: asha, fifo, pbt",
        ),
        (
            {"config": {"optimizer": {"lr": "fast"}}},
            "config.optimizer.lr: Input should be a valid number",
        ),
        ({"config": {"optimzer": {}}}, "config.optimzer: unknown field; valid fields: dataset"),
        (
            {"stop": {"iterations": -1}},
            "stop.iterations: Input should be greater than or equal to 1",
        ),
        ({"stpo": {}}, "stpo: unknown field; valid fields: name, trainer"),
        (
            {"config": {"model": {"widths": {"grid": [[8], ["x"]]}}}},
            "(?s)config.model.widths.0: Input should be a valid integer"
            ".*when config.model.widths = \\['x'\\]",
        ),
        (
            {"loop": {"record": [{"probe": "latents"}]}},
            "loop.record: trainer 'classifier' has no probe",
        ),
        (
            {"config": {"optimizer": {"lr": {"grid": [0.1]}}}, "search": {"algorithm": "optuna"}},
            "with optuna use 'choice'",
        ),
        ({"analysis": [{"step": "granger"}]}, "analysis.0.step: unknown analysis step 'granger'"),
        ({"analysis": [{"step": "ccm", "input": "train/loss"}]}, "needs 2 or more series"),
        ({"analysis": [{"step": "edm", "params": {"maxE": 3}}]}, "edm takes: max_E, tau"),
        ({"seed": "abc"}, "seed: expected an integer"),
        (
            {"config": {"model": {"widths": [0]}}},
            "config.model.widths.0: Input should be greater than 0",
        ),
    ],
)
def test_bad_configs_name_the_field(fields, expected):
    with pytest.raises(ConfigError, match=expected):
        spec_of(**fields)


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"name": "t", "trainer": "classifier", "config": {"batch_size": "big"}})
    )
    assert cli.main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config.batch_size: Input should be a valid integer" in err
    assert "Traceback" not in err
    assert cli.main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    assert cli.main(["sweep", str(QUICKSTART), "--set", "nokey"]) == 2
    assert "expected path.to.key=value" in capsys.readouterr().err


def test_dry_run_prints_plan_and_starts_nothing(capsys, no_ray):
    assert cli.main(["sweep", str(QUICKSTART), "--dry-run", "--set", "num_samples=3"]) == 0
    out = capsys.readouterr().out
    assert "trials: 12 (grid search, fifo scheduler)" in out
    assert "config.optimizer.lr: grid [0.02, 0.1]" in out
    assert "resources per trial: 1 CPU, 0 GPU; concurrent trials: 2" in out


def test_unreachable_tracking_server_is_reported_before_ray(capsys, no_ray):
    code = cli.main(["sweep", str(QUICKSTART), "--tracking-uri", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach the MLflow server at http://127.0.0.1:9" in capsys.readouterr().err


def test_unreachable_ray_address_is_reported_plainly(workdir, capsys, no_ray):
    code = cli.main(["sweep", str(QUICKSTART), "--address", "127.0.0.1:9"])
    assert code == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    spec = load_spec(path)
    assert spec.num_trials() >= 1
    # runs as shipped: nothing in a value for the user to fill in first
    values = json.dumps(spec.config)
    assert not re.search(r"REPLACE|RUN_ID|RUN_[AB]\b", values), values
