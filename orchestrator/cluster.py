"""Beyond one machine: submitting a sweep to a Ray cluster, and a shared MLflow server.

``submit`` sends ``dynsweep sweep CONFIG --address auto ...`` to a running cluster as a Ray Job
(the current folder is the job's working directory, without ``RUNTIME_EXCLUDES``), or, for a
cluster-launcher YAML, uploads the config with ``ray rsync-up`` and runs it on the head with
``ray exec``. ``server`` starts an MLflow tracking server that trials on every node can reach.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from dynsweep import logs
from dynsweep.errors import ConfigError, UserError

log = logging.getLogger(__name__)

# Never uploaded with a job: history, local stores, datasets, sweep folders, environments.
RUNTIME_EXCLUDES = [
    ".git",
    "mlflow.db",
    "mlruns",
    "mlartifacts",
    "data",
    "dynsweep_runs",
    ".venv",
    "__pycache__",
    "*.egg-info",
]


def sweep_command(
    config: str, overrides: list[str], tracking_uri: str | None, verbose: bool = False
) -> list[str]:
    cmd = ["dynsweep", "sweep", config, "--address", "auto"]
    for item in overrides:
        cmd += ["--set", item]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    if verbose:
        cmd.append("--verbose")
    return cmd


def submit(
    target: str,
    config: str,
    overrides: list[str],
    tracking_uri: str | None = None,
    wait: bool = False,
    timeout_s: float | None = None,
    verbose: bool = False,
) -> str:
    """Submit a sweep; returns the job id (Ray Jobs) or the launcher command's status.
    ``verbose``: the sweep on the cluster runs with ``--verbose`` too."""
    from orchestrator.spec import load_spec

    load_spec(config, overrides)  # a bad config fails here, not on the cluster
    if not tracking_uri or tracking_uri.startswith("sqlite:"):
        log.warning(
            "the cluster's trials log to %s; a sqlite file works only when the sweep runs on "
            "one machine (use --tracking-uri http://SERVER:5000)",
            tracking_uri or "the config tracking.uri",
        )
    command = sweep_command(config, overrides, tracking_uri, verbose)
    if Path(target).suffix in (".yaml", ".yml"):
        return _submit_launcher(target, config, command)
    return _submit_job(target, command, wait, timeout_s)


def _submit_job(address: str, command: list[str], wait: bool, timeout_s: float | None) -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    # The client's INFO lines ("Uploading package ...") only with --verbose: its modules set
    # their loggers to INFO themselves.
    logs.apply_ray_level("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")
    if "://" not in address:
        address = f"http://{address}"
    try:
        client = JobSubmissionClient(address)
    except Exception as exc:
        raise ConfigError(
            f"submit: no Ray cluster answers at {address} ({exc}); expected the dashboard "
            "address (http://HEAD:8265) or a cluster YAML"
        ) from None
    from ray.exceptions import AuthenticationError

    try:
        job = _submit_when_ready(client, command)
    except AuthenticationError:
        raise ConfigError(
            f"submit: the cluster at {address} requires a token: set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or put the cluster's token in ~/.ray/auth_token)"
        ) from None
    print(f"submitted job {job} to {address}")
    print(f"follow it with: ray job logs --follow --address {address} {job}")
    if not wait:
        return job
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while (status := client.get_job_status(job)) not in final:
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"submit: job {job} still {status} after {timeout_s:g} s")
        time.sleep(1)
    print(client.get_job_logs(job)[-4000:])
    if status != JobStatus.SUCCEEDED:
        raise UserError(f"submit: job {job} ended {status}")
    return job


def _submit_when_ready(client, command: list[str], patience_s: float = 120.0) -> str:
    """Submit; a cluster that has just started may have no job agent yet: retry a while."""
    deadline = time.monotonic() + patience_s
    waited = False
    while True:
        try:
            return client.submit_job(
                entrypoint=shlex.join(command),
                runtime_env={"working_dir": ".", "excludes": RUNTIME_EXCLUDES},
            )
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            if not waited:
                log.info("the cluster has no job agent yet; retrying for up to %g s", patience_s)
                waited = True
            time.sleep(2)


def _submit_launcher(cluster: str, config: str, command: list[str]) -> str:
    ray = shutil.which("ray") or "ray"
    remote = f"/tmp/dynsweep/{Path(config).name}"
    command[2] = remote
    steps = [
        [ray, "exec", cluster, "mkdir -p /tmp/dynsweep"],
        [ray, "rsync-up", cluster, config, remote],
        [ray, "exec", cluster, shlex.join(command)],
    ]
    for step in steps:
        print("+", shlex.join(step), flush=True)
        code = subprocess.call(step)
        if code != 0:
            raise UserError(f"submit: {shlex.join(step[:3])} failed (exit {code})")
    return "done"


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str] = (),
    workers: int | None = None,
) -> list[str]:
    """``mlflow server`` serving artifacts through itself (clients need no storage access).

    ``allowed_hosts`` are Host headers accepted *besides* MLflow's defaults (localhost and the
    private IP ranges): since MLflow 3.5 the server refuses any other Host, so a worker that
    reaches it by a service name (``dynsweep-head-svc:5000`` on KubeRay) must be named here.
    ``workers`` is the number of server processes (MLflow's default, 4, when None)."""
    mlflow = shutil.which("mlflow") or "mlflow"
    cmd = [
        mlflow,
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
    ]
    extra = [h.strip() for entry in allowed_hosts for h in entry.split(",") if h.strip()]
    if extra:
        from mlflow.server.security_utils import get_default_allowed_hosts

        hosts = list(dict.fromkeys([*get_default_allowed_hosts(), *extra]))
        cmd += ["--allowed-hosts", ",".join(hosts)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd
