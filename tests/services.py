"""Real servers for the multi-node tests, started on 127.0.0.1 and stopped by PID.

- :func:`postgres`: a PostgreSQL server (Debian's ``postgresql`` package; ``initdb`` and
  ``pg_ctl`` run as the ``postgres`` user on a fresh data folder and a free port).
- :func:`s3_server`: moto's standalone S3-compatible server, with a bucket.
- :func:`ray_cluster`: a Ray head (no CPUs: trials never run beside the driver) and worker
  nodes, each in its own mount namespace with a private tmpfs over the driver's folder, so a
  worker cannot see what the driver wrote there.

A missing part (no PostgreSQL binaries, no ``unshare``) fails the test under CI, where
``.ci/run`` installs everything, and skips it elsewhere, naming what to install.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for, wait_for_url

ROOT = Path(__file__).resolve().parents[1]
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def missing(what: str) -> None:
    """Fail (under CI) or skip (elsewhere) for a missing part, naming how to get it."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{what} (CI is set, so this fails rather than skips)")
    pytest.skip(what)


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started in its own session, and everything in its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


_restarts = {}  # URI of a running postgres() → its restart function
_s3_servers: dict[str, subprocess.Popen] = {}  # endpoint of a running s3_server() → its process


def restart_postgres(uri: str, down_s: float = 0.0) -> None:
    """Stop the :func:`postgres` server of ``uri`` (``pg_ctl stop -m fast``: its connections
    cut), keep it down ``down_s`` seconds, start it again on the same port and data."""
    _restarts[uri](down_s)


@contextmanager
def postgres():
    """A PostgreSQL server; yields the SQLAlchemy URI of an empty database ``mlflow``."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        missing("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    bindir = Path(bins[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="dynsweep-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -h 127.0.0.1 -k {folder}"
    as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                "-w", "start")  # fmt: skip
    uri = f"postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"

    def restart(down_s: float) -> None:  # stop (fast), stay down down_s seconds, start again
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        time.sleep(down_s)
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
                    "-w", "start")  # fmt: skip

    _restarts[uri] = restart
    try:
        as_postgres(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "mlflow")
        yield uri
    finally:
        _restarts.pop(uri, None)
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def s3_server(bucket: str = "dynsweep"):
    """moto's S3 server with ``bucket``; yields its endpoint (``http://127.0.0.1:PORT``)."""
    server = shutil.which("moto_server")
    if server is None:
        missing("moto's server is not installed: pip install 'moto[server]' (.ci/run does)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **S3_ENV},
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(endpoint + "/", 60)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        _s3_servers[endpoint] = proc
        yield endpoint
    finally:
        _s3_servers.pop(endpoint, None)
        with suppress(ProcessLookupError):  # a paused server could not stop
            os.killpg(proc.pid, signal.SIGCONT)
        _stop(proc)


def pause_s3(endpoint: str, seconds: float) -> None:
    """Make the S3 server at ``endpoint`` unreachable for ``seconds`` (SIGSTOP, then SIGCONT):
    connections are accepted by the kernel but never answered, as in a network partition; the
    server keeps its objects (it holds them in memory only, so it is not restarted)."""
    proc = _s3_servers[endpoint]
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def s3_objects(endpoint: str, bucket: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    keys, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **extra)
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


@contextmanager
def mlflow_server(backend: str, artifacts: str, env: dict[str, str]):
    """``dynsweep server`` on a free port; yields its URI."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "server", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", artifacts],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@dataclass
class RayCluster:
    address: str
    head: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def kill_worker(self, name: str) -> None:
        """Lose a worker node: SIGKILL its raylet and everything else of that node."""
        proc = self.workers[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _COUNT_NODES, self.address],
            capture_output=True, text=True, check=True, env=_ray_env(),
        )  # fmt: skip
        return int(out.stdout.strip().splitlines()[-1])


_COUNT_NODES = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")))
"""


def _ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(extra or {})}
    env.pop("RAY_ADDRESS", None)
    return env


@contextmanager
def ray_cluster(hidden: Path, workers: list[str], env: dict[str, str]):
    """A head without CPUs and one worker node per name (1 CPU, custom resource ``name``), each
    worker in its own mount namespace where ``hidden`` is an empty private tmpfs."""
    if shutil.which("unshare") is None:
        missing("unshare (util-linux) is needed to hide the driver's folder from worker nodes")
    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="dynsweep-rayhead-"))
    ports = [free_port() for _ in range(5)]
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
         "--include-dashboard=false", f"--temp-dir={temp}",
         f"--dashboard-agent-listen-port={ports[0]}", f"--dashboard-agent-grpc-port={ports[1]}",
         f"--metrics-export-port={ports[2]}", f"--runtime-env-agent-port={ports[3]}",
         f"--node-manager-port={ports[4]}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_ray_env(env),
    )  # fmt: skip
    cluster = RayCluster(f"127.0.0.1:{port}", head)
    try:
        wait_for(lambda: _answers(port), 90, "the Ray head")
        # One node at a time: two nodes starting together on one IP can take each other's
        # raylet for their own and time out.
        for joined, name in enumerate(workers):
            wport = [free_port() for _ in range(4)]
            script = (
                f"mount -t tmpfs tmpfs {hidden} && exec ray start --block "
                f"--address=127.0.0.1:{port} --num-cpus=1 --resources='{json.dumps({name: 1})}' "
                f"--dashboard-agent-listen-port={wport[0]} "
                f"--dashboard-agent-grpc-port={wport[1]} --metrics-export-port={wport[2]} "
                f"--runtime-env-agent-port={wport[3]}"
            )
            log = open(temp / f"{name}.log", "w")  # noqa: SIM115 (kept open by the node)
            cluster.workers[name] = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                start_new_session=True, stdout=log, stderr=subprocess.STDOUT, env=_ray_env(env),
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while cluster.alive_nodes() <= joined:
                if time.monotonic() > deadline:
                    tail = (temp / f"{name}.log").read_text()[-3000:]
                    raise TimeoutError(f"worker node {name} did not join the Ray head:\n{tail}")
                time.sleep(1)
        yield cluster
    finally:
        for proc in cluster.workers.values():
            _stop(proc)
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
