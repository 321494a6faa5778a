"""What a sweep will do, before it starts: its ``--dry-run`` plan and its trial slots."""

from __future__ import annotations

import os

from orchestrator import budget, chain, devices, space
from orchestrator.spec import ExperimentSpec, dump_yaml
from trainers import get_trainer_class

MEMORY_SHARE = 0.8  # of a GPU's memory, for its pack's members (the rest: CUDA, allocator)


def _resources(res) -> str:
    if not res.distributed:
        return f"{res.cpus:g} CPU, {res.gpus:g} GPU"
    strategy = res.strategy + (f" ZeRO-{res.zero_stage}" if res.strategy == "deepspeed" else "")
    return (
        f"{res.workers} Ray Train workers x ({res.cpus_per_worker:g} CPU, "
        f"{res.gpus_per_worker:g} GPU), {strategy}, {res.precision}"
    )


def plan(spec: ExperimentSpec, tracking_uri: str | None = None) -> str:
    """What a sweep would do (``--dry-run``): resolved spec, trial count, resources, and the
    tracking store it would use (``--tracking-uri`` as ``tracking_uri``)."""
    from dynsweep.uri import choose_uri

    res, n = spec.resources, spec.num_trials()
    concurrent = spec.max_concurrent_trials or "as many as fit"
    dims = [
        f"  {space.dotted(p)}: {d.kind} {list(d.values)}"
        for p, d in space.domains(spec.parsed_space())
    ]
    drawn = chain.queries(spec.config)
    times = " × the runs drawn below" if any(q.form == "grid" for _, q in drawn) else ""
    dims += [
        f"  config.{space.dotted(p)}: {q.form} of {q.describe()} (answered when the sweep starts)"
        for p, q in drawn
    ]
    return "\n".join(
        [
            "# resolved experiment",
            dump_yaml(spec).rstrip(),
            "",
            f"trials: {n}{times} "
            f"({spec.search.algorithm} search, {spec.scheduler.name} scheduler)" + _packing(spec),
            "search dimensions:",
            *(dims or ["  (none)"]),
            f"resources per trial: {_resources(res)}; concurrent trials: {concurrent}",
            f"steps per trial: {spec.stop.iterations}; "
            f"tracking: {choose_uri(tracking_uri, spec.tracking.uri)}",
            f"recordings: about {budget.estimate(spec)[1] / 1e9:.3g} GB "
            f"(budget {spec.loop.record_budget_gb:g} GB)",
        ]
    )


def _packing(spec: ExperimentSpec) -> str:
    if spec.pack == 1:
        return ""
    from orchestrator.packing import make_packs

    cap, why = member_cap(spec)
    packs = make_packs(spec, slots(spec), cap)
    out = f", packed into {len(packs)} Tune trials of up to {max(map(len, packs))} points"
    return out + (f" ({why})" if spec.pack == "auto" and why else "")


def slots(spec: ExperimentSpec) -> int:
    """Trials that can run at once (on the Ray cluster when one is connected): CPU slots, or
    GPU slots when a trial holds a GPU."""
    import ray

    res = spec.resources
    if res.gpus > 0:
        have = ray.cluster_resources() if ray.is_initialized() else devices.local_devices()
        count = max(1, int(have.get("GPU", 0) // res.gpus))
    else:
        cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else os.cpu_count()
        count = max(1, int(cpus // res.cpus))
    return min(count, spec.max_concurrent_trials or count)


def member_cap(spec: ExperimentSpec) -> tuple[int | None, str]:
    """With ``pack: auto`` on a GPU: the most members one pack may hold, from the device's
    memory (this machine's GPU, else ``resources.gpu_memory_gb``) and one member's footprint
    (the trainer's ``member_bytes``); and the reason, for ``--dry-run``. ``None``: no cap."""
    res = spec.resources
    if spec.pack != "auto" or res.gpus <= 0:
        return None, ""
    cls = get_trainer_class(spec.trainer)
    memory = devices.gpu_memory_bytes(res.gpu_memory_gb)
    if memory is None:
        return None, "GPU memory unknown here: set resources.gpu_memory_gb to cap packs by it"
    configs = [
        cls.Config.model_validate(v) for _, v in space.variants(spec.parsed_space()["config"])
    ]
    sizes = [cls.member_bytes(c) for c in configs]
    if any(b is None for b in sizes):
        return None, f"trainer {spec.trainer!r} gives no member footprint: packs are not capped"
    per = max(sizes)
    usable = MEMORY_SHARE * memory * min(res.gpus, 1.0)
    cap = max(1, int(usable // per))
    return cap, (
        f"one pack per GPU slot, at most {cap} members: {MEMORY_SHARE:.0%} of "
        f"{memory / 2**30:.0f} GiB × {min(res.gpus, 1.0):g} GPU / {per / 2**20:.3g} MiB a member"
    )
