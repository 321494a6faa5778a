"""One order for the tracking URI, wherever a command reads one: --tracking-uri, then
MLFLOW_TRACKING_URI, then the config's tracking.uri, then ./mlflow.db."""

from __future__ import annotations

import pytest
import yaml

import tracking
from dynsweep.uri import DEFAULT_URI, choose_uri


def test_the_order(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert choose_uri() == DEFAULT_URI == "sqlite:///mlflow.db"
    assert choose_uri(None, "sqlite:///c.db") == "sqlite:///c.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert choose_uri(None, "sqlite:///c.db") == "http://env:5000"
    assert choose_uri("http://flag:5000", "sqlite:///c.db") == "http://flag:5000"
    assert tracking.tracking_uri() == "http://env:5000"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "e",
                "trainer": "classifier",
                "tracking": {"uri": "sqlite:///from-config.db"},
                "stop": {"iterations": 2},
                "analysis": [{"step": "edm", "input": "train/loss"}],
            }
        )
    )
    return path


def test_analyze_config_reads_the_environments_store(config, monkeypatch, tmp_path):
    """A sweep logged to a server through MLFLOW_TRACKING_URI is analysed from that server,
    not from the config's ./mlflow.db (the config's URI came before the variable)."""
    from orchestrator import cli

    seen = {}
    monkeypatch.setattr("orchestrator.sweep.init_ray", lambda address: None)
    monkeypatch.setattr(
        "analysis.runner.analyze", lambda experiment, steps, uri, **kw: seen.setdefault("uri", uri)
    )
    monkeypatch.setattr(cli, "_print_analysis", lambda outcomes: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert cli.main(["analyze", str(config)]) == 0
    assert seen.pop("uri") == "http://tracking.example:5000"
    assert cli.main(["analyze", str(config), "--tracking-uri", "http://flag:5000"]) == 0
    assert seen.pop("uri") == "http://flag:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze", str(config)]) == 0
    assert seen.pop("uri") == f"sqlite:///{tmp_path / 'from-config.db'}"


def test_dry_run_prints_the_store_the_sweep_would_use(config, monkeypatch, capsys):
    from orchestrator import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert cli.main(["sweep", str(config), "--dry-run"]) == 0
    assert "tracking: http://tracking.example:5000" in capsys.readouterr().out
    assert cli.main(["sweep", str(config), "--dry-run", "--tracking-uri", "sqlite:///f.db"]) == 0
    assert "tracking: sqlite:///f.db" in capsys.readouterr().out
