"""Containers of the project's image, run with buildah (no Docker daemon needed).

``.ci/image.sh`` builds the image from the ``Dockerfile`` (tag ``localhost/dynsweep:ci``, or
``DYNSWEEP_IMAGE``). Each :class:`Container` is a working container of that image: its own root
filesystem (so it sees none of the host's nor another container's files) and, here, its own PID
namespace (``unshare --pid`` around ``buildah run``: a ``ray stop`` inside stops only that
container's Ray). They share the host's network, as the nodes of a cluster share one network:
the servers listen on 127.0.0.1 and free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.services import missing

IMAGE = os.environ.get("DYNSWEEP_IMAGE", "localhost/dynsweep:ci")


def image() -> str:
    """The image's tag; fails under CI (skips elsewhere) when buildah or the image is missing."""
    if shutil.which("buildah") is None or shutil.which("unshare") is None:
        missing("buildah is not installed: apt-get install buildah mmdebstrap (.ci/run does)")
    found = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True)
    if found.returncode != 0:
        missing(f"the image {IMAGE} is not built: bash .ci/image.sh (.ci/run does)")
    return IMAGE


class Container:
    """A working container of ``image``; :meth:`run` and :meth:`start` run commands in it."""

    def __init__(self, image: str, env: dict[str, str] | None = None):
        out = subprocess.run(["buildah", "from", image], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"buildah from {image}: {out.stderr}")
        self.name = out.stdout.strip().splitlines()[-1]
        self.env = dict(env or {})
        self.started: list[subprocess.Popen] = []

    def argv(self, command: str, env: dict[str, str] | None = None) -> list[str]:
        envs = [f"--env={k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        return ["unshare", "--pid", "--fork", "--mount-proc",
                "buildah", "run", "--isolation", "chroot", "--network", "host", *envs,
                self.name, "--", "bash", "-c", command]  # fmt: skip

    def run(self, command: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """Run ``command`` (bash) in the container and wait; stdout and stderr together."""
        return subprocess.run(
            self.argv(command, env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout, start_new_session=True,
        )  # fmt: skip

    def start(self, command: str, log: Path, **env: str) -> subprocess.Popen:
        """Start ``command`` in the background (its own PID namespace), output to ``log``."""
        out = open(log, "w")  # noqa: SIM115 (kept open by the process)
        proc = subprocess.Popen(
            self.argv(command, env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.started.append(proc)
        return proc

    def path(self, inside: str) -> Path:
        """Where a path of the container's filesystem lies on the host (``buildah mount``)."""
        out = subprocess.run(["buildah", "mount", self.name], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"buildah mount {self.name}: {out.stderr}")
        return Path(out.stdout.strip()) / inside.lstrip("/")

    def stop(self) -> None:
        """Stop what was started (the PID namespace's first process takes the rest with it)."""
        for proc in self.started:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
        self.started.clear()

    def remove(self) -> None:
        self.stop()
        subprocess.run(["buildah", "umount", self.name], capture_output=True)
        subprocess.run(["buildah", "rm", self.name], capture_output=True)


@contextmanager
def containers(image: str, count: int, env: dict[str, str] | None = None):
    """``count`` containers of ``image``, removed afterwards."""
    made: list[Container] = []
    try:
        for _ in range(count):
            made.append(Container(image, env))
        yield made
    finally:
        for c in made:
            c.remove()
