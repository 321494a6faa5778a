"""The Trainer contract and the context a trainer is handed.

A trainer is one model family's code behind a narrow contract; the generic loop in
:mod:`trainers.loop` owns iteration counts, cadences, NaN detection, stopping and recording.
Trainers never talk to MLflow or Ray: they get a :class:`Context` and report through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from trainers.distributed import Parallel

# What step() and evaluate() return: floats or 0-d tensors; for a packed trainer, one value per
# member (a list or a 1-d tensor).
Metrics = dict[str, float | torch.Tensor | list[float]]


class TrainerConfig(BaseModel):
    """Base of every trainer's typed config: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class FitResult:
    """How a run of the loop ended: last step, its metrics, and why it stopped."""

    step: int
    metrics: dict[str, float]
    stop_reason: str  # iterations (ran them all) | time | metric (a stop rule fired)


class Member(Protocol):
    """One grid point's own sink: its metrics, trajectories and failure."""

    trajectory_dir: Path  # where the recorder writes (one sub-folder per trajectory)
    # Ended already (a retried pack's member that had failed for good): the loop leaves it out.
    closed: bool

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Record metric values at ``step`` (batched to the tracking store)."""

    def on_trajectory_file(self, name: str, path: Path) -> None:
        """A trajectory chunk file was completed on local disk (log it as an artifact)."""

    def fail(self, message: str) -> None:
        """This member diverged: end its run as failed (the other members go on)."""


class Context(Protocol):
    """What a trainer (and the loop) may use of the world around it.

    Implemented by the orchestrator for Tune trials and by :class:`LocalContext` for plain use.
    """

    seed: int
    device: torch.device
    workdir: Path  # this trial's private scratch folder
    data_dir: Path  # where datasets are cached / downloaded
    parallel: Parallel  # world size, rank and strategy of a distributed trial
    # Where metrics and recordings go: one sink per member of a packed trainer (its own run),
    # ``[self]`` for ordinary trainers. The loop logs and records only through these.
    members: list[Member]

    def report(self, step: int, metrics: dict[str, float], checkpoint: dict | None) -> None:
        """Report to the scheduler (and save ``checkpoint`` for retries/resume when given)."""

    def finish(self, result: FitResult, checkpoint: dict, export: dict) -> None:
        """The loop is done: keep the final model (``export``) and make the last report.

        Called before the last report reaches the scheduler, which may end the trial there.
        """

    def log_file(self, path: Path, artifact_path: str) -> None:
        """Keep the file ``path`` as an artifact of the run under folder ``artifact_path``."""


class Trainer(ABC):
    """One model family. Built from its own typed config; each class owns its defaults.

    ``probes`` names what can be recorded (``record: [{probe: weights}]`` in a YAML); the loop
    asks :meth:`probe` for a tensor at the cadence the experiment chose.
    """

    Config: ClassVar[type[TrainerConfig]]
    probes: ClassVar[tuple[str, ...]] = ()
    distributed: ClassVar[bool] = False  # steps through trainers.distributed engines (DDP, ...)
    # Vectorised packing (trainers.packing): config fields that may differ inside a pack, and
    # the "module:Class" of the packed form; pack_size: grid points this instance trains (the
    # length of the context's ``members``).
    pack_fields: ClassVar[tuple[str, ...]] = ()
    packed: ClassVar[str | None] = None
    pack_size: int = 1

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config

    @classmethod
    def prepare(cls, configs: list[TrainerConfig], data_dir: Path) -> None:
        """Fetch what trials will need (datasets) once, in the driver, before Ray starts.

        ``configs`` covers every value of the search space. Raise a ``DataError`` naming the
        file or dataset when something is missing, so the sweep fails before any trial runs.
        By default: load (download once) every ``dataset`` the configs name.
        """
        from trainers.data import load_dataset

        for name in sorted({c.dataset for c in configs if hasattr(c, "dataset")}):
            load_dataset(name, data_dir, 0.2, 0)

    @classmethod
    def probe_sizes(cls, config: TrainerConfig) -> dict[str, dict[str, int]]:
        """Values per step of each probe, by column label, without building data (used to
        refuse recordings over budget before anything starts). Empty: unknown."""
        return {}

    @classmethod
    def estimated_steps_per_epoch(cls, config: TrainerConfig) -> int | None:
        return None

    @classmethod
    def member_bytes(cls, config: TrainerConfig) -> int | None:
        """Device memory one member of a packed trainer needs while training (weights,
        gradients, optimiser state, activations of a batch), estimated without building it;
        ``pack: auto`` on a GPU caps a pack by it. ``None``: unknown (packs are not capped)."""
        return None

    @abstractmethod
    def setup(self, ctx: Context) -> None:
        """Build data, model and optimiser; seeded from ``ctx.seed``, placed on ``ctx.device``."""

    @abstractmethod
    def step(self) -> Metrics:
        """Do one unit of work (an optimiser step) and return its metrics (``train/...``).

        Values are floats or tensors: 0-d, or for a packed trainer lists or 1-d tensors with
        one value per member. Return tensors on a GPU: the loop keeps them on the device and
        copies many steps' values to the host at once (see :mod:`trainers.loop`), where a
        ``.item()`` per metric would wait for the device every step. A returned tensor must be
        detached and never modified afterwards (its value is read up to ``report_every``
        steps later): return a fresh result, not a buffer the trainer updates in place.
        """

    def evaluate(self) -> Metrics:
        """Return evaluation metrics (``val/...``) as :meth:`step` does; called at the loop's
        eval cadence."""
        return {}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this trainer is (tensors, numbers)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @property
    def steps_per_epoch(self) -> int | None:
        """Steps in one pass over the training data, if the notion applies."""
        return None

    def probe(self, name: str) -> torch.Tensor | list[torch.Tensor]:
        """The tensor named ``name`` (one of :attr:`probes`) at the current step, or a list of
        tensors recorded as their flat concatenation (labelled by :meth:`probe_columns`).
        Return views, not copies: the recorder copies once, straight into its buffer."""
        raise KeyError(name)

    def probe_columns(self, name: str) -> dict[str, list[int]]:
        """Optional map from a label (e.g. a parameter name) to its [start, stop) columns."""
        return {}

    def write_artifacts(self, folder: Path) -> list[Path]:
        """Files (figures, sample grids) to keep with the run when training ends."""
        return []

    def export(self) -> dict[str, Any]:
        """The weights that rebuild the model alone (with the resolved config); default: all."""
        return self.state_dict()


def parameter_columns(module: torch.nn.Module) -> dict[str, list[int]]:
    """[start, stop) columns of each named parameter in the flat concatenation of
    ``module.parameters()`` (what a ``weights`` probe records)."""
    columns, start = {}, 0
    for name, p in module.named_parameters():
        columns[name] = [start, start + p.numel()]
        start += p.numel()
    return columns
