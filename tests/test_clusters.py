"""Cluster files validate against Ray's own schema; jobs, servers and studies work locally."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster import RUNTIME_EXCLUDES, sweep_command
from tests.helpers import free_port, run_cli, store, sweep_runs, wait_for_url, write_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "onprem.yaml"])
def test_launcher_configs_pass_rays_schema_and_run_the_image(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTERS / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["docker"]["image"].startswith("ghcr.io/dynsweep/dynsweep")
    assert any("dynsweep server" in c for c in config["head_start_ray_commands"])
    assert {".git", "mlflow.db", "data"} <= set(config["rsync_exclude"])
    broken = {**copy.deepcopy(config), "max_wokers": 3}
    with pytest.raises(Exception, match="max_wokers"):
        validate_config(prepare_config(broken))


def test_kuberay_manifests_name_the_image_and_a_dynsweep_entrypoint():
    cluster = yaml.safe_load((CLUSTERS / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTERS / "kuberay" / "rayjob.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("dynsweep sweep ")
    assert "--address auto" in job["spec"]["entrypoint"]
    containers = [
        c
        for spec in (cluster["spec"], job["spec"]["rayClusterSpec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for c in group["template"]["spec"]["containers"]
    ]
    assert all(c["image"].startswith("ghcr.io/dynsweep/dynsweep") for c in containers)


def test_slurm_script_is_valid_bash():
    script = CLUSTERS / "slurm" / "ray-on-slurm.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)
    assert "dynsweep sweep" in script.read_text()


def test_submit_builds_the_sweep_command_and_excludes_local_state():
    cmd = sweep_command("configs/quickstart.yaml", ["stop.iterations=5"], "http://h:5000")
    assert cmd == [
        "dynsweep", "sweep", "configs/quickstart.yaml", "--address", "auto",
        "--set", "stop.iterations=5", "--tracking-uri", "http://h:5000",
    ]  # fmt: skip
    assert {".git", "mlflow.db", "mlruns", "data"} <= set(RUNTIME_EXCLUDES)


@pytest.mark.e2e
def test_a_sweep_submitted_as_a_ray_job_to_a_local_head_finishes(workdir, tmp_path_factory):
    port, dashboard = free_port(), free_port()
    temp = tmp_path_factory.mktemp("rayhead")
    # Every port of its own: the tests' Ray session runs beside it (the job agent's default
    # port 52365 would be taken, and jobs would find no agent).
    agent, agent_grpc, metrics, runtime_env = (free_port() for _ in range(4))
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # a throwaway head on 127.0.0.1: no token (Ray 2.60's ray start may require one when
        # ~/.ray/auth_token exists; `dynsweep submit` names the fix when a cluster does)
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{dashboard}/api/version", 120)
        cfg = write_config(
            workdir,
            config={"optimizer": {"lr": {"grid": [0.05, 0.2]}}},
            stop={"iterations": 10},
            loop={"report_every": 5, "checkpoint_every": 10, "eval_every": 10},
        )
        uri = f"sqlite:///{workdir / 'job.db'}"  # one machine: the job and the test share it
        code = run_cli(
            "submit", f"http://127.0.0.1:{dashboard}", str(cfg), "--tracking-uri", uri,
            "--wait", "--timeout", "300",
        )  # fmt: skip
        assert code == 0
        from mlflow.tracking import MlflowClient

        _, children = sweep_runs(MlflowClient(uri))
        assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


def mpiexec() -> str:
    """mpich's launcher from PyPI sits beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec") or "mpiexec"


@pytest.mark.e2e
def test_mpiexec_two_ranks_train_one_run_logged_from_rank_0(workdir):
    from tests.test_distributed import diffusion_sweep

    cfg = diffusion_sweep(workdir, {"cpus": 1})  # 12 steps, weights recorded every 3
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DYNSWEEP_TRAINERS": ""}
    result = subprocess.run(
        [mpiexec(), "-n", "2", sys.executable, "-m", "orchestrator.cli", "train", str(cfg)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parents, children = sweep_runs(store(workdir))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [
        m.step for m in store(workdir).get_metric_history(children[0].info.run_id, "train/loss")
    ]
    assert sorted(steps) == list(range(1, 13))
    artifacts = {a.path for a in store(workdir).list_artifacts(children[0].info.run_id)}
    assert {"model", "trajectories", "config.json"} <= artifacts
    assert list((workdir / "dynsweep_runs").glob("t-mpi-*/state-rank1.pt"))


def _kuberay_server_args() -> list[str]:
    """The ``dynsweep server`` command line of the KubeRay head container, as written there."""
    import shlex

    cluster = yaml.safe_load((CLUSTERS / "kuberay" / "raycluster.yaml").read_text())
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    line = next(a for a in head["args"] if "dynsweep server" in a).split("&")[0]
    args = shlex.split(line)
    assert args[:2] == ["dynsweep", "server"], line
    return args[2:]


def test_server_command_adds_allowed_hosts_to_mlflows_defaults_and_passes_workers():
    from orchestrator.cli_parser import parser
    from orchestrator.cluster import server_command

    args = parser().parse_args(["server", *_kuberay_server_args()])
    assert args.workers == 4 and args.allowed_hosts == ["dynsweep-head-svc:5000,dynsweep-head-svc"]
    cmd = server_command("sqlite:///x.db", "/a", "0.0.0.0", 5000, args.allowed_hosts, 4)
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert {"dynsweep-head-svc:5000", "dynsweep-head-svc", "localhost:*", "10.*"} <= set(hosts)
    assert cmd[cmd.index("--workers") + 1] == "4"
    plain = server_command("sqlite:///x.db", "/a", "127.0.0.1", 5000)
    assert "--allowed-hosts" not in plain and "--workers" not in plain  # MLflow's own defaults


@pytest.mark.e2e
def test_a_server_started_as_kuberay_starts_it_answers_a_service_name_host(tmp_path):
    """Workers reach the head's server as http://dynsweep-head-svc:5000; MLflow ≥ 3.5 refuses
    Host headers it was not told of, so the KubeRay file's own command line must name it."""
    import urllib.error
    import urllib.request

    args = _kuberay_server_args()
    port = free_port()
    values = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination": str(tmp_path / "mlartifacts"),
    }
    args = [values.get(args[i - 1], a) if i else a for i, a in enumerate(args)]
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "server", *args],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", 90)

        def status(host: str) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                headers={"Host": host},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status("dynsweep-head-svc:5000") == 200
        assert status("10.4.0.7:5000") == 200  # a pod IP: MLflow's defaults are kept
        assert status("elsewhere.example:5000") == 403  # the check itself is on
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.e2e
def test_mpi_train_answers_references_before_training(workdir):
    """`dynsweep train` (MPI) makes the driver's checks as `sweep` does: a `run:` reference and
    a `{runs: …}` query in the config are answered with the artifact's local path, not handed
    to the trainer as they are (nor refused by validation)."""
    import torch

    import tracking
    from trainers.local import LocalContext
    from trainers.loop import LoopConfig, StopRule, fit
    from trainers.paths.trainer import PathsConfig, PathsTrainer

    paths = PathsConfig(order=2, width=8, lr=0.02)
    ctx = LocalContext(workdir / "path")
    fit(PathsTrainer(paths), ctx, LoopConfig(eval_every=40), StopRule(iterations=40))
    model = workdir / "model" / "model.pt"
    model.parent.mkdir()
    header = {"trainer": "paths", "config": paths.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": 40, "state": ctx.export}, model)
    client = store(workdir)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "paths")
    parent = tracking.start_sweep_run(uri, exp, "paths-sweep", {}, {})
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_artifact(run, str(model), "model")
    client.set_terminated(run, "FINISHED")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "DYNSWEEP_TRAINERS": ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    sampler = {"chains": 2, "warmup": 10, "draws": 10}
    for name, path_model in [
        ("ref", f"run:{run}/model/model.pt"),
        ("query", {"runs": {"experiment": "paths", "count": 1}}),  # a grid of the one run
    ]:
        cfg = workdir / f"{name}.yaml"
        raw = {"name": name, "trainer": "subspace", "config": {"path_model": path_model, **sampler}}
        cfg.write_text(yaml.safe_dump({**raw, "metric": "val/lppd", "stop": {"iterations": 40}}))
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "train", str(cfg)],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        parents, children = sweep_runs(client, name)
        assert [c.info.status for c in children] == ["FINISHED"], name
        used = children[0].data.params["config.path_model"]
        assert used.endswith("model.pt") and not used.startswith(("run:", "{")), used
