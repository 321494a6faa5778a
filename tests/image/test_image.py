"""The image users deploy (``Dockerfile``), built by ``.ci/image.sh`` and run as containers.

- Every package of the project imports in the image, the quick tier passes in it (on the
  image's Python: 3.13 in CI), and the quickstart runs in one container from a non-editable
  install (``/work``, not the source folder).
- The launcher YAMLs' head and worker start commands start Ray and the tracking server there.
- A cluster of containers: a Ray head (no CPUs) with ``dynsweep server`` on PostgreSQL with S3
  artifacts, and two worker containers. The quickstart goes through ``dynsweep submit
  http://HEAD:8265`` (Ray Jobs), ``dynsweep analyze`` runs after it (a Ray Job too), and the
  host reads the results back: every run FINISHED, every step once, artifacts in S3, nothing
  written to the host's folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import free_port, sweep_runs, wait_for, wait_for_url
from tests.image.containers import containers, image
from tests.services import S3_ENV, postgres, s3_objects, s3_server

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "dynsweep"
STEPS = 300  # the quickstart's


@pytest.fixture(scope="module")
def tag() -> str:
    return image()


def packages() -> list[str]:
    """The project's top-level packages: folders of the checkout with an ``__init__.py``."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


def test_every_package_imports_in_the_image(tag):
    names = packages()
    assert {"orchestrator", "trainers", "tracking", "analysis", "dynsweep"} <= set(names)
    with containers(tag, 1) as (c,):
        # From /work: the installed copy, not the source folder /opt/dynsweep.
        code = "import importlib, sys; [importlib.import_module(n) for n in sys.argv[1:]]"
        out = c.run(f"cd /work && python -c '{code}' {' '.join(names)} && dynsweep --help")
        assert out.returncode == 0, out.stdout[-4000:]
        # The installed copy, with the data files its packages read (package data).
        check = (
            "import orchestrator; from trainers.paths.data import uci; "
            "print(orchestrator.__file__, len(uci('energy')['train'][0]))"
        )
        where = c.run(f'cd /work && python -c "{check}"')
        assert where.returncode == 0, where.stdout[-3000:]
        assert "/opt/venv/lib/" in where.stdout, where.stdout  # not an editable install
        assert where.stdout.split()[-1] == "537", where.stdout  # energy's training rows


def test_the_quick_tier_passes_on_the_image_python(tag):
    """The README's `pytest` (the quick tier) in the image: CI builds it on Debian trixie, so
    this is the quick tier on Python 3.13 (the host runs it on 3.11)."""
    with containers(tag, 1) as (c,):
        version = c.run("python -c 'import sys; print(*sys.version_info[:2])'").stdout.split()
        out = c.run("cd /opt/dynsweep && python -m pytest -q -x", timeout=2400, CI="true")
        tail = out.stdout[-6000:]
        assert out.returncode == 0, f"Python {'.'.join(version[-2:])}:\n{tail}"
        assert re.search(r"\d+ passed", tail) and "failed" not in tail, tail


def test_the_quickstart_runs_in_a_container(tag):
    with containers(tag, 1) as (c,):
        out = c.run("cd /work && dynsweep sweep /opt/dynsweep/configs/quickstart.yaml")
        assert out.returncode == 0, out.stdout[-6000:]
        assert "4 trials — 4 finished" in out.stdout, out.stdout[-4000:]
        client = MlflowClient(f"sqlite:///{c.path('/work/mlflow.db')}")
        _, children = sweep_runs(client, "quickstart")
        assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
        for run in children:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
            assert steps == list(range(1, STEPS + 1)), run.info.run_name
            assert "analysis/edm/best_E" in run.data.metrics


def ray_ports() -> str:
    """Ray's fixed default ports moved to free ones (every node shares the host's network)."""
    return " ".join(
        f"--{flag}={free_port()}"
        for flag in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "node-manager-port",
        )  # fmt: skip
    )


def alive_cpu_nodes(dashboard: int) -> int:
    """Alive nodes with CPUs, from the head's dashboard (Ray's state API, over HTTP)."""
    url = f"http://127.0.0.1:{dashboard}/api/v0/nodes?limit=100"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            nodes = json.load(reply)["data"]["result"]["result"]
    except (OSError, KeyError, ValueError):
        return -1
    return sum(n["state"] == "ALIVE" and n["resources_total"].get("CPU", 0) > 0 for n in nodes)


def launcher_commands(name: str, kind: str, ports: dict[str, int]) -> str:
    """A launcher YAML's ``{kind}_start_ray_commands`` as the launcher runs them (one shell),
    on this machine's free ports. Outside a launcher there is no autoscaler, so its
    ``--autoscaling-config`` is dropped; Ray's fixed default ports are moved off."""
    spec = yaml.safe_load((ROOT / "clusters" / name).read_text())
    script = "\n".join(spec[f"{kind}_start_ray_commands"])
    script = script.replace(":6379", f":{ports['ray']}").replace("=6379", f"={ports['ray']}")
    script = script.replace("--port 5000", f"--port {ports['server']}")
    script = re.sub(r"\s--autoscaling-config=\S+", "", script)
    extra = ray_ports()
    if kind == "head":
        extra += f" --dashboard-port={ports['dashboard']} --ray-client-server-port={free_port()}"
    return re.sub(r"(ray start [^\n;&]*)", rf"\1 {extra}", script)


def launchers() -> list[str]:
    """The launcher YAMLs, one for each distinct pair of start command lists."""
    distinct: dict[str, str] = {}
    for path in sorted((ROOT / "clusters").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if "head_start_ray_commands" in spec:
            key = json.dumps([spec["head_start_ray_commands"], spec["worker_start_ray_commands"]])
            distinct.setdefault(key, path.name)
    return sorted(distinct.values())


def test_the_launchers_are_found():
    assert {"aws.yaml", "onprem.yaml"} <= set(launchers())


@pytest.mark.parametrize("name", launchers())
def test_the_launcher_start_commands_run_in_the_image(tag, tmp_path, name):
    ports = {"ray": free_port(), "server": free_port(), "dashboard": free_port()}
    head_script = launcher_commands(name, "head", ports)
    worker_script = launcher_commands(name, "worker", ports)
    assert "ray stop" in head_script  # each container has its own PID namespace
    with containers(tag, 2, {"RAY_AUTH_MODE": "disabled"}) as (head, worker):
        # The launchers' `ray stop` must stop only the container's own Ray, never the host's:
        # refuse to run it unless the container sees only its own processes.
        seen = head.run("ls /proc | grep -c '^[0-9]'").stdout.split()
        assert seen and int(seen[0]) < 20, f"no private PID namespace: {seen}"
        # The launcher runs each command and keeps the container; so does `sleep infinity`.
        head.start(head_script + "\nsleep infinity", tmp_path / "head.log")
        wait_for_url(f"http://127.0.0.1:{ports['server']}/health", 180)
        worker.start(worker_script + "\nsleep infinity", tmp_path / "worker.log",
                     RAY_HEAD_IP="127.0.0.1")  # fmt: skip

        def joined() -> bool:
            return alive_cpu_nodes(ports["dashboard"]) == 2

        try:
            wait_for(joined, 180, f"the head and the worker node of {name}")
        except AssertionError as exc:
            logs = [(tmp_path / f).read_text()[-3000:] for f in ("head.log", "worker.log")]
            raise AssertionError(f"{exc}\n{logs[0]}\n{logs[1]}") from None


def test_a_cluster_of_containers_runs_a_submitted_sweep(tag, tmp_path):
    with postgres() as db, s3_server(BUCKET) as endpoint:
        # The documented form: postgresql://, which gets psycopg 3 (the postgres extra).
        backend = db.replace("postgresql+psycopg://", "postgresql://")
        env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint, "RAY_AUTH_MODE": "disabled"}
        port, dashboard, server_port = free_port(), free_port(), free_port()
        server = f"http://127.0.0.1:{server_port}"
        with containers(tag, 3, env) as (head, *workers):
            head.start(
                f"dynsweep server --host 127.0.0.1 --port {server_port} --workers 2 "
                f"--backend-store-uri {backend} --artifacts-destination s3://{BUCKET}/mlflow "
                "> /tmp/server.log 2>&1 &\n"
                f"exec ray start --head --block --port={port} --num-cpus=0 "
                f"--dashboard-host=127.0.0.1 --dashboard-port={dashboard} "
                f"--ray-client-server-port={free_port()} {ray_ports()}",
                tmp_path / "head.log",
            )
            wait_for_url(f"{server}/health", 180)
            wait_for_url(f"http://127.0.0.1:{dashboard}/api/version", 180)
            for joined, (worker, name) in enumerate(zip(workers, ["node_a", "node_b"])):
                worker.start(
                    f"exec ray start --block --address=127.0.0.1:{port} --num-cpus=1 "
                    f"""--resources='{{"{name}": 1}}' {ray_ports()}""",
                    tmp_path / f"{name}.log",
                )
                wait_for(lambda j=joined: alive_cpu_nodes(dashboard) > j, 180,
                         f"worker container {name} joining the head")  # fmt: skip

            # The user's folder: the experiment file alone, before and after.
            folder = tmp_path / "user"
            folder.mkdir()
            (folder / "quickstart.yaml").write_text((ROOT / "configs/quickstart.yaml").read_text())
            storage = f"s3://{BUCKET}/sweeps?endpoint_override={endpoint[7:]}&scheme=http"
            out = subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "submit",
                 f"http://127.0.0.1:{dashboard}", "quickstart.yaml", "--tracking-uri", server,
                 "--set", f"storage={storage}", "--wait", "--timeout", "900"],
                cwd=folder, capture_output=True, text=True, env={**os.environ, **env},
            )  # fmt: skip
            assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
            assert "4 trials — 4 finished" in out.stdout, out.stdout[-4000:]
            assert [p.name for p in folder.iterdir()] == ["quickstart.yaml"]

            client = MlflowClient(server)
            _, children = sweep_runs(client, "quickstart")
            assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
            for run in children:
                history = client.get_metric_history(run.info.run_id, "train/loss")
                assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
                assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            keys = s3_objects(endpoint, BUCKET, "mlflow/")
            assert any("/trajectories/weights/" in k for k in keys), keys[:20]
            assert any(k.endswith("/dynsweep_sweep.json") for k in s3_objects(
                endpoint, BUCKET, "sweeps/quickstart-"))  # fmt: skip

            # Analysis again, as a Ray Job too (its tasks run on the workers: the head has no
            # CPUs); the host reads each run's result back from the server.
            from ray.job_submission import JobStatus, JobSubmissionClient

            jobs = JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
            analyze = f"dynsweep analyze --experiment quickstart --force --tracking-uri {server}"
            job = jobs.submit_job(entrypoint=analyze)
            final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
            wait_for(lambda: jobs.get_job_status(job) in final, 600, "the analysis job")
            assert jobs.get_job_status(job) == JobStatus.SUCCEEDED, jobs.get_job_logs(job)[-4000:]
            for run in children:
                history = client.get_metric_history(run.info.run_id, "analysis/edm/best_E")
                best = sorted(history, key=lambda m: m.timestamp)
                # the sweep's step (max_E 8), then --experiment's default EDM step (max_E 10)
                assert [m.value for m in best][0] <= 8 and len(best) == 2, best
                assert all(1 <= m.value <= 10 for m in best), best
