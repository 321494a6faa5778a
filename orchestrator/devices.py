"""What a sweep asks of the machine's devices, checked before Ray starts.

- A local Ray (no ``--address``) can only give trials what this machine has: asking for more
  GPUs (or CPUs) than it has would leave Ray waiting forever, printing its autoscaler's
  "No available node types can fulfill resource request" every half minute. Such a sweep is
  refused here, with the numbers and what to change (exit status 2).
- On a cluster, where autoscaling may add nodes, a trial that cannot be placed is watched by
  :class:`orchestrator.progress.PendingWatch` instead.
"""

from __future__ import annotations

import os

from dynsweep.errors import ConfigError


def per_trial(spec) -> dict[str, float]:
    """CPUs and GPUs one trial holds (all its Ray Train workers together)."""
    res = spec.resources
    if res.distributed:
        return {"CPU": res.workers * res.cpus_per_worker, "GPU": res.workers * res.gpus_per_worker}
    return {"CPU": res.cpus, "GPU": res.gpus}


def local_devices() -> dict[str, float]:
    """What a local Ray started here would have: this process's usable CPUs, and the CUDA
    devices torch sees (``CUDA_VISIBLE_DEVICES`` applies)."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"CPU": float(cpus or 1), "GPU": float(torch.cuda.device_count())}


def check_local(
    spec, address: str | None, have: dict[str, float] | None = None, trials: bool = True
) -> None:
    """Refuse a sweep whose trials (unless ``trials`` is false: ``dynsweep analyze``) or
    analysis tasks cannot fit on this machine, when Ray is local: no ``--address`` and no
    ``RAY_ADDRESS``."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    have = have or local_devices()
    field = "resources.gpus_per_worker" if spec.resources.distributed else "resources.gpus"
    wanted = [("trial", per_trial(spec), field)] if trials else []
    analysis = {"GPU": spec.resources.analysis_gpus}
    wanted.append(("analysis task", analysis, "resources.analysis_gpus"))
    for who, need, gpu_field in wanted:
        gpus = need.get("GPU", 0.0)
        if gpus > have["GPU"]:
            has = f"{have['GPU']:g} GPU" + ("s" if have["GPU"] != 1 else "")
            raise ConfigError(
                f"{gpu_field}: each {who} asks for {gpus:g} GPU"
                f"{'s' if gpus != 1 else ''}; this machine has {has} (torch sees "
                f"{have['GPU']:g} CUDA devices) and Ray would wait for them forever. Run on "
                f"the CPU with --set {gpu_field}=0, or on a cluster with GPUs (--address)"
            )
        cpus = need.get("CPU", 0.0)
        if cpus > have["CPU"]:
            cpu_field = field.replace("gpus", "cpus")
            raise ConfigError(
                f"{cpu_field}: each {who} asks for {cpus:g} CPUs; this machine has "
                f"{have['CPU']:g}. Ask for at most {have['CPU']:g} or run on a cluster (--address)"
            )


def gpu_memory_bytes(configured_gb: float | None) -> int | None:
    """Memory of one GPU: this machine's first CUDA device, else ``configured_gb`` (a driver
    without a GPU, in front of a GPU cluster), else ``None``."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None if configured_gb is None else int(configured_gb * 2**30)
