"""``postgresql://`` reaches psycopg 3 whatever SQLAlchemy 2.x resolves (2.0 would look for
psycopg2), on every path a URI is read: tracking (resolve_uri), the server, Optuna."""

from __future__ import annotations

import importlib.util

import pytest
import sqlalchemy

import tracking
from tracking import store


@pytest.fixture
def without_psycopg2(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "psycopg2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_plain_postgresql_uri_names_psycopg3_where_psycopg2_is_missing(without_psycopg2):
    uri = "postgresql://u:pw@db:5432/mlflow"
    mapped = tracking.with_sql_driver(uri)
    assert mapped == "postgresql+psycopg://u:pw@db:5432/mlflow"
    assert sqlalchemy.create_engine(mapped).dialect.driver == "psycopg"
    assert tracking.resolve_uri(uri) == mapped
    for other in ("postgresql+psycopg2://u@db/x", "sqlite:////tmp/a.db", "http://h:5000"):
        assert tracking.with_sql_driver(other) == other


def test_installed_psycopg2_keeps_the_uri(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: object() if name == "psycopg2" else real(name, *a, **k),
    )
    assert store.with_sql_driver("postgresql://u@db/x") == "postgresql://u@db/x"


def test_server_and_optuna_storage_get_the_driver(without_psycopg2, monkeypatch):
    import optuna

    from orchestrator import cli, registry

    seen = {}
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda url: seen.setdefault("optuna", url))
    registry.optuna_storage("postgresql://u@127.0.0.1:1/optuna")
    assert seen["optuna"] == "postgresql+psycopg://u@127.0.0.1:1/optuna"
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: seen.setdefault("server", cmd) and 0)
    assert cli.main(["server", "--backend-store-uri", "postgresql://u@db/mlflow"]) == 0
    cmd = seen["server"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "postgresql+psycopg://u@db/mlflow"
