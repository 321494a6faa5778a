"""One distributed training without Ray, launched by MPI on HPC systems:

    mpiexec -n 4 dynsweep train CONFIG [--set key=value ...]

Each process finds its rank with mpi4py; rank 0 picks the rendezvous address and broadcasts it,
and ``torch.distributed`` starts from it (gloo on CPU, nccl on GPUs; DeepSpeed, when the spec's
strategy asks for it, builds on that process group). The config must name one point (no search
dimensions). Rank 0 logs to MLflow exactly as a Tune trial does — a parent run for the job and
one child run with params, metrics, trajectories and the final model; checkpoints are written
under ``storage/NAME-mpi-STAMP/`` (one state file per rank).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import tracking
from dynsweep.errors import ConfigError
from orchestrator import space
from orchestrator.context import TrialContext, TrialPoint, open_runs, train
from orchestrator.session import SweepSession, prepare_data
from orchestrator.spec import ExperimentSpec, load_spec
from tracking import tags as tag
from trainers import get_trainer_class
from trainers.distributed import Parallel


@dataclass
class MPIContext(TrialContext):
    """A rank of an MPI job: no scheduler; checkpoints are kept in a folder on disk."""

    checkpoint_dir: Path | None = None

    def _send(self, result: dict[str, Any], folder: Path | None) -> None:
        if folder is not None and self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / self.state_file, self.checkpoint_dir / self.state_file)


def single_point(spec: ExperimentSpec) -> tuple[dict[str, Any], int]:
    """(config, seed) of a spec without search dimensions (a grid of one value is that value:
    a ``{runs: …}`` query that found one run, say)."""
    parsed = spec.parsed_space()
    dims = [
        space.dotted(p)
        for p, d in space.domains(parsed)
        if not (d.kind == "grid" and len(d.values) == 1)
    ]
    if dims:
        raise ConfigError(
            f"train runs one configuration; fix {', '.join(dims)} with --set (or use sweep)"
        )
    point = space.substitute(parsed)
    return point["config"], int(point["seed"])


def check_rank_devices(spec: ExperimentSpec, local_rank: int) -> None:
    """A rank whose spec asks for GPUs needs its own CUDA device on its node (it would
    otherwise train on the CPU without a word)."""
    res = spec.resources
    field = "resources.gpus_per_worker" if res.distributed else "resources.gpus"
    wanted = res.gpus_per_worker if res.distributed else res.gpus
    if not wanted:
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local_rank >= count:
        raise ConfigError(
            f"{field}: rank {local_rank} on {socket.gethostname()} asks for a GPU; this node has "
            f"{count} CUDA device{'s' if count != 1 else ''}. Start at most {count} ranks per "
            f"node, or train on the CPU with --set {field}=0"
        )


def _rendezvous(comm) -> tuple[str, int]:
    if comm.Get_rank() == 0:
        host = socket.gethostbyname(socket.gethostname())
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        found = (host, port)
    else:
        found = None
    return comm.bcast(found, root=0)


def train_mpi(config_path: str, overrides: list[str], tracking_uri: str | None = None) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    spec = load_spec(config_path, overrides)
    # The driver's checks, as `dynsweep sweep` makes them (orchestrator.session): the store can
    # be reached, `{runs: …}` queries and `run:` references are answered (on every rank: the
    # artifacts are downloaded where that rank runs); each rank checks its own GPUs below.
    session = SweepSession(spec, tracking_uri=tracking_uri)
    spec = session.preflight(devices=False, data=False)
    uri = session.uri
    config, seed = single_point(spec)
    cls = get_trainer_class(spec.trainer)
    if size > 1 and not cls.distributed:
        raise ConfigError(
            f"train: trainer {spec.trainer!r} trains in one process; run it with mpiexec -n 1"
        )
    trainer_config = cls.Config.model_validate(config)
    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    check_rank_devices(spec, local_rank)
    host, port = _rendezvous(comm)
    os.environ.update(
        MASTER_ADDR=host,
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(local_rank),
    )
    gpu = torch.cuda.is_available() and (spec.resources.gpus_per_worker or spec.resources.gpus)
    device = torch.device(f"cuda:{local_rank}" if gpu else "cpu")
    if size > 1:
        torch.distributed.init_process_group("nccl" if gpu else "gloo", rank=rank, world_size=size)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(spec.storage).resolve() / f"{spec.name}-mpi-{stamp}"
    run, parent, header = None, None, None
    if rank == 0:
        prepare_data(spec)
        tags = {tag.GIT_SHA: tracking.git_sha(), tag.LAUNCHER: f"mpi x{size}"}
        parent = session.open_parent(folder.name, tags)
        point = TrialPoint(
            f"{folder.name}-0", "mpi", spec.trainer, trainer_config.model_dump(mode="json"), seed
        )
        (run,) = open_runs(uri, session.experiment_id, parent, [point], {})
        header = point.header(run.run_id)
    header = comm.bcast(header, root=0)
    res = spec.resources
    parallel = Parallel(size, rank, res.strategy, res.zero_stage, res.precision)
    workdir = Path(tempfile.mkdtemp(prefix=f"dynsweep-mpi-r{rank}-"))
    ctx = MPIContext(
        run, seed, workdir, Path(spec.data_dir).resolve(), header, device, parallel=parallel,
        checkpoint_dir=folder,
    )  # fmt: skip
    try:
        train(cls(trainer_config), ctx, spec, None, 0)
    except BaseException as exc:
        if rank == 0:  # the parent run ends as a sweep's does (orchestrator.session)
            session.close(*session.failure(exc))
        if size > 1:  # the other ranks may wait in a collective: end the whole job
            comm.Abort(1)
        raise
    comm.Barrier()
    if rank == 0:
        session.close("FINISHED")
        print(f"run {header['run_id']} FINISHED; checkpoints in {folder}")
    if size > 1:
        torch.distributed.destroy_process_group()
    return 0
