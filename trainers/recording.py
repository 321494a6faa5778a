"""Recording trajectories: named tensors, one row per recorded step, in chunk files.

On-disk layout of one trajectory (a folder named after it)::

    meta.json                          shape of one step, dtype, optional column labels
    c{attempt:03d}-{first:09d}-{last:09d}.npy        values, shape (n, *shape)
    c{attempt:03d}-{first:09d}-{last:09d}.steps.npy  the n step indices (written last)
    attempt-{attempt:03d}.json         {"resumed_from": step} for every resumed attempt

Every file is written to a temporary name and renamed into place, so a crash leaves either a
whole chunk or none; a chunk counts only once its ``.steps.npy`` exists. A resumed attempt
re-records the steps after its checkpoint: for each step the newest attempt that covers it
wins, and rows of older attempts past a later attempt's resume point are dropped, so the
trajectory read back has no gaps and no duplicates.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dynsweep.errors import DataError

_CHUNK = re.compile(r"^c(\d{3})-(\d{9})-(\d{9})\.steps\.npy$")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Recorder:
    """Buffers recorded rows per trajectory and writes them as chunk files.

    Parameters
    ----------
    root
        Folder that holds one sub-folder per trajectory.
    attempt
        Number of this attempt of the trial (0 for a fresh start, +1 for each resume).
    resumed_from
        Step of the checkpoint this attempt resumed from (``None`` for a fresh start).
    chunk_steps
        Rows per chunk file.
    on_file
        Called with (trajectory name, path) for every completed file, e.g. to log it.
    """

    def __init__(
        self,
        root: Path,
        attempt: int = 0,
        resumed_from: int | None = None,
        chunk_steps: int = 64,
        on_file: Callable[[str, Path], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.attempt = attempt
        self.resumed_from = resumed_from
        self.chunk_steps = chunk_steps
        self.on_file = on_file or (lambda name, path: None)
        self._rows: dict[str, list[np.ndarray]] = {}
        self._steps: dict[str, list[int]] = {}
        self._started: set[str] = set()

    def record(self, name: str, step: int, tensor: torch.Tensor, columns=None) -> None:
        """Append ``tensor`` (copied to host memory) as the row of ``name`` at ``step``."""
        row = tensor.detach().to("cpu", copy=True).numpy()
        if name not in self._started:
            self._start(name, row, columns)
        self._rows[name].append(row)
        self._steps[name].append(int(step))
        if len(self._rows[name]) >= self.chunk_steps:
            self._flush_one(name)

    def flush(self) -> None:
        """Write every buffered row to disk (called before each checkpoint and at the end)."""
        for name in list(self._rows):
            self._flush_one(name)

    def _start(self, name: str, row: np.ndarray, columns) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"shape": list(row.shape), "dtype": str(row.dtype), "columns": columns or {}}
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            _atomic_json(meta_path, meta)
            self.on_file(name, meta_path)
        if self.resumed_from is not None:
            marker = folder / f"attempt-{self.attempt:03d}.json"
            _atomic_json(marker, {"resumed_from": self.resumed_from})
            self.on_file(name, marker)
        self._rows[name], self._steps[name] = [], []
        self._started.add(name)

    def _flush_one(self, name: str) -> None:
        rows, steps = self._rows.get(name), self._steps.get(name)
        if not rows:
            return
        folder = self.root / name
        stem = f"c{self.attempt:03d}-{steps[0]:09d}-{steps[-1]:09d}"
        values_path, steps_path = folder / f"{stem}.npy", folder / f"{stem}.steps.npy"
        _atomic_save(values_path, np.stack(rows))
        _atomic_save(steps_path, np.asarray(steps, dtype=np.int64))
        self.on_file(name, values_path)
        self.on_file(name, steps_path)
        self._rows[name], self._steps[name] = [], []


@dataclass
class Trajectory:
    """A recorded trajectory read back: ``values[i]`` was recorded at ``steps[i]``."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    columns: dict[str, list[int]]

    def column(self, label: str) -> np.ndarray:
        """The values of one labelled column block (e.g. a layer's weights), flattened."""
        start, stop = self.columns[label]
        return self.values.reshape(len(self.steps), -1)[:, start:stop]


def read_trajectory(folder: Path, steps: slice | None = None) -> Trajectory:
    """Read a trajectory folder written by :class:`Recorder`.

    Chunks are memory-mapped and only the rows selected by ``steps`` (a slice over the
    recorded step numbers, e.g. ``slice(100, 200)``) are copied out.
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: not a recorded trajectory (meta.json is missing)")
    meta = json.loads(meta_path.read_text())
    resumed = {
        int(p.stem.split("-")[1]): json.loads(p.read_text())["resumed_from"]
        for p in folder.glob("attempt-*.json")
    }
    chunks = []
    for p in folder.iterdir():
        m = _CHUNK.match(p.name)
        if m:
            chunks.append((int(m.group(1)), p))
    # step -> (attempt, chunk values path, row)
    best: dict[int, tuple[int, Path, int]] = {}
    for attempt, steps_path in sorted(chunks):
        limit = min((s for a, s in resumed.items() if a > attempt), default=None)
        try:
            chunk_steps = np.load(steps_path)
        except (ValueError, OSError) as exc:
            raise DataError(f"{steps_path}: unreadable trajectory chunk ({exc})") from exc
        values_path = steps_path.with_name(steps_path.name.replace(".steps.npy", ".npy"))
        for row, s in enumerate(chunk_steps.tolist()):
            if limit is not None and s > limit:
                continue
            if s not in best or best[s][0] <= attempt:
                best[s] = (attempt, values_path, row)
    selected = sorted(best)
    if steps is not None:
        lo = -np.inf if steps.start is None else steps.start
        hi = np.inf if steps.stop is None else steps.stop
        selected = [s for s in selected if lo <= s < hi][:: steps.step or 1]
    shape = tuple(meta["shape"])
    out = np.empty((len(selected), *shape), dtype=np.dtype(meta["dtype"]))
    maps: dict[Path, np.ndarray] = {}
    for i, s in enumerate(selected):
        _, path, row = best[s]
        if path not in maps:
            try:
                maps[path] = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise DataError(f"{path}: unreadable trajectory chunk ({exc})") from exc
        out[i] = maps[path][row]
    return Trajectory(folder.name, np.asarray(selected, dtype=np.int64), out, meta["columns"])
