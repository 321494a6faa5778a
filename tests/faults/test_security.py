"""Security defaults: weights-only checkpoint loads, safe YAML, no eval/exec, services bound to
127.0.0.1, and no credentials in what is written to MLflow or printed."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

import tracking
from dynsweep.errors import DataError
from orchestrator import cli
from orchestrator.checkpoints import load_state
from tests.helpers import run_cli, store, sweep_runs, write_config
from tracking import TrialRun

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["dynsweep", "orchestrator", "trainers", "analysis"]
TOKEN = "tok-3f9a8b7c6d5e4f3a"  # a credential-looking value, set in the environment below
PASSWORD = "hunter2-pw"


def calls(name: str):
    """(file, line, call node) of every call of ``name`` (``torch.load``, ``eval``) in the
    packages' code."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                    yield path.relative_to(ROOT), node.lineno, node


def test_every_torch_load_is_weights_only_and_a_pickle_payload_is_refused(tmp_path):
    found = list(calls("torch.load"))
    assert len(found) >= 5
    for path, line, node in found:
        flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert flags.get("weights_only") == "True", f"{path}:{line}"

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "state.pt"
    with bad.open("wb") as f:
        pickle.dump({"loop": Payload()}, f, protocol=2)
    with pytest.raises(DataError, match=f"{bad}: unreadable checkpoint"):
        load_state(bad)
    assert not marker.exists()


def test_yaml_is_parsed_safely_and_nothing_evaluates_config_strings(tmp_path, capsys, no_ray):
    for unsafe in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
        assert not list(calls(unsafe)), unsafe
    marker = tmp_path / "payload-ran"
    bad = tmp_path / "experiment.yaml"
    bad.write_text(
        f"name: t\ntrainer: classifier\nseed: !!python/object/apply:pathlib.Path.touch "
        f"[!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    assert cli.main(["sweep", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_services_bind_127_0_0_1_unless_told_otherwise():
    parser = cli.parser()
    assert parser.parse_args(["ui"]).host == "127.0.0.1"
    assert parser.parse_args(["server"]).host == "127.0.0.1"
    # Launcher clusters: Ray's dashboard on the head's loopback (reach it with `ray dashboard`);
    # no firewall rule of ours opens anything to the world (Ray's own group: SSH + in-cluster).
    for name in ("aws", "gcp", "onprem"):
        text = (ROOT / "clusters" / f"{name}.yaml").read_text()
        assert "--dashboard-host=127.0.0.1" in text, name
        assert "0.0.0.0/0" not in text and "IpRanges" not in text, name
    # KubeRay: services stay inside the cluster (kubectl port-forward to reach them).
    for path in (ROOT / "clusters" / "kuberay").glob("*.yaml"):
        assert not {"LoadBalancer", "NodePort"} & set(path.read_text().split()), path.name


def test_credentials_never_reach_params_tags_or_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", TOKEN)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a setting, not a secret: kept
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db_uri = f"postgresql://optuna:{PASSWORD}@db.internal:5432/optuna"
    exp = tracking.ensure_experiment(uri, "secrets")
    parent = tracking.start_sweep_run(
        uri, exp, "sweep", {"search": {"storage": db_uri}, "note": f"token {TOKEN}"},
        {"dynsweep.env": "RAY_AUTH_MODE=disabled"},
    )  # fmt: skip
    run = TrialRun.open(
        uri, exp, parent, "t_00000", "trial", params={"config.url": db_uri},
        tags={"dynsweep.header": f"Bearer {TOKEN}"},
    )  # fmt: skip
    run.log_dict({"config": {"url": db_uri, "key": TOKEN}}, "config.json")
    run.end("FAILED", f"could not reach {db_uri} with {TOKEN}")
    tracking.set_tags(MlflowClient(uri), parent, {"dynsweep.error": f"x {TOKEN}"})

    written = dump_store(uri, tmp_path)
    assert TOKEN not in written and PASSWORD not in written
    assert "postgresql://optuna:***@db.internal:5432/optuna" in written
    assert "Bearer ***" in written and "RAY_AUTH_MODE=disabled" in written


def dump_store(uri: str, folder: Path) -> str:
    """Every param, tag and JSON artifact of every run, as one text."""
    client = MlflowClient(uri)
    texts = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            texts += [json.dumps(run.data.params), json.dumps(run.data.tags)]
    for path in folder.rglob("*.json"):
        texts.append(path.read_text())
    return "\n".join(texts)


@pytest.mark.e2e
@pytest.mark.usefixtures("ray_session")
def test_a_failing_sweep_keeps_a_uri_password_out_of_mlflow_and_the_output(workdir, capfd):
    url = f"https://reader:{PASSWORD}@data.example.org/digits.npz"
    cfg = write_config(
        workdir,
        trainer="flaky",
        max_failures=0,
        config={"fail_at": 10**6, "raise_at": 3, "raise_message": f"cannot fetch {url}"},
    )
    assert run_cli("sweep", str(cfg)) == 0
    client = store(workdir)
    [run] = sweep_runs(client)[1]
    assert run.info.status == "FAILED"
    shown = "https://reader:***@data.example.org/digits.npz"
    assert run.data.tags["dynsweep.error"] == f"ValueError: cannot fetch {shown} at step 3"
    assert run.data.params["config.raise_message"] == f"cannot fetch {shown}"
    artifacts = Path(urlparse(run.info.artifact_uri).path).parent.parent
    assert PASSWORD not in dump_store(client.tracking_uri, artifacts)
    out = capfd.readouterr()
    summary = out.out[out.out.index("Sweep t-") :]
    assert shown in summary and PASSWORD not in summary
