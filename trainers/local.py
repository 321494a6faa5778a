"""A context for running a trainer without Ray or MLflow (tests, notebooks, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainers.base import FitResult
from trainers.distributed import Parallel


@dataclass
class LocalContext:
    """Keeps metrics, reports and the last checkpoint in memory."""

    workdir: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_dir: Path = Path("data")
    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    reports: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    last_checkpoint: dict | None = None
    result: FitResult | None = None
    export: dict | None = None
    files: list[tuple[str, Path]] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)
    parallel: Parallel = field(default_factory=Parallel)
    # The members' own contexts when a packed trainer runs here; a failed member's reason.
    member_contexts: list[LocalContext] = field(default_factory=list)
    failure: str | None = None
    closed: bool = False  # a member ended before the loop starts: it is left out

    @classmethod
    def packed(cls, workdir: Path, count: int, **kwargs) -> LocalContext:
        """A context for a packed trainer of ``count`` members (each logs into its own)."""
        members = [cls(workdir / f"member{i}", **kwargs) for i in range(count)]
        return cls(workdir, member_contexts=members, **kwargs)

    @property
    def members(self) -> list[LocalContext]:
        return self.member_contexts or [self]

    def fail(self, message: str) -> None:
        self.failure = message

    @property
    def trajectory_dir(self) -> Path:
        return self.workdir / "trajectories"

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, dict(metrics)))

    def report(self, step: int, metrics: dict[str, float], checkpoint: dict | None) -> None:
        self.reports.append((step, dict(metrics)))
        if checkpoint is not None:
            self.last_checkpoint = checkpoint

    def finish(self, result: FitResult, checkpoint: dict, export: dict) -> None:
        self.result, self.export = result, export
        self.report(result.step, result.metrics, checkpoint)

    def on_trajectory_file(self, name: str, path: Path) -> None:
        self.files.append((name, path))

    def log_file(self, path: Path, artifact_path: str) -> None:
        self.kept.append((path, artifact_path))
