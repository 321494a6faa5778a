"""Recording named tensors every k steps without stalling the training loop.

The training thread only copies each recorded tensor into a row of a preallocated chunk
buffer (pinned host memory and a non-blocking copy on a GPU; the cast to ``float16`` and an
optional random projection happen on the device). Full chunks go through a bounded queue to
one writer thread that compresses, writes (see :mod:`trainers.trajectory` for the format;
uncompressed chunks go from their page-aligned buffer to the disk with ``O_DIRECT``, no copy
into the page cache: :mod:`trainers.direct_io`) and hands each finished file to ``on_file``
(the orchestrator logs it to MLflow). Memory is bounded: when the writer falls behind, the
training thread waits for a free buffer. Nothing on the training thread waits for the GPU:
the writer waits on a CUDA event before it reads a chunk, and a multi-tensor probe (all
weights) is gathered on the device first, so a step costs one device-to-host copy per
trajectory, not one per tensor.
"""

from __future__ import annotations

import bisect
import json
import mmap
import queue
import threading
from collections.abc import Callable
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dynsweep.errors import DataError
from trainers.direct_io import DirectWriter, aligned_empty
from trainers.sketch import Parts, Sketch
from trainers.trajectory import atomic_write, chunk_stem, codec, pack

Every = int | Literal["epoch"]
DTYPES = {"float32": torch.float32, "float16": torch.float16}
CHUNK_BYTES = 32 * 2**20


class RecordSpec(BaseModel):
    """What to record of the trainer's probe ``probe``, how often and how small.

    ``select``: shell patterns over the probe's column labels (e.g. ``layers.1.*``);
    ``project``: record a seeded random projection to this many dimensions;
    ``dtype``: ``float16`` halves the size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    probe: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the probe's name
    every: Every = 1
    dtype: Literal["float32", "float16"] = "float32"
    select: tuple[str, ...] = ()
    project: int | None = Field(None, ge=1)
    seed: int = 0

    @property
    def trajectory(self) -> str:
        return self.name or self.probe

    @model_validator(mode="after")
    def _positive(self) -> RecordSpec:
        if isinstance(self.every, int) and self.every < 1:
            raise ValueError("every must be a positive integer or 'epoch'")
        return self


class _Series:
    """One recorded trajectory: its layout, its buffers and its current chunk."""

    def __init__(self, name: str, spec: RecordSpec, parts: Parts, columns: dict, rows: int):
        self.name, self.spec = name, spec
        self.device = parts[0].device
        sizes = [p.numel() for p in parts]
        labels = list(columns)
        self.keep: list[int] | None = None  # indices of parts kept by `select`
        self.index: torch.Tensor | None = None  # flat columns kept by `select`
        if spec.select:
            chosen = [lbl for lbl in labels if any(fnmatch(lbl, pat) for pat in spec.select)]
            if not chosen:
                raise DataError(
                    f"record {name}: select {list(spec.select)} matches none of "
                    f"its columns: {labels}"
                )
            if len(parts) == len(labels) and all(
                columns[lbl][1] - columns[lbl][0] == n for lbl, n in zip(labels, sizes)
            ):
                self.keep = [labels.index(lbl) for lbl in chosen]
            else:
                idx = [torch.arange(*columns[lbl]) for lbl in chosen]
                self.index = torch.cat(idx).to(self.device)
            columns = _relabel(columns, chosen)
        width = (
            len(self.index)
            if self.index is not None
            else sum(sizes[i] for i in (self.keep if self.keep is not None else range(len(parts))))
        )
        self.proj = None
        if spec.project:
            self.proj = Sketch(width, spec.project, spec.seed).to(self.device)
            columns, width = {}, spec.project
        self.width, self.columns = width, columns
        plain = len(parts) == 1 and not spec.select and not spec.project
        self.shape = list(parts[0].shape) if plain else [width]  # one step's shape on read
        self.dtype = DTYPES[spec.dtype]
        row_bytes = width * torch.finfo(self.dtype).bits // 8
        self.rows = max(1, min(rows, CHUNK_BYTES // max(1, row_bytes)))
        pin = self.non_blocking = self.device.type == "cuda"  # pinned buffers, async copies
        self.free: queue.Queue[torch.Tensor] = queue.Queue()
        self.memory: dict[int, mmap.mmap] = {}  # a CPU buffer's page-aligned memory (O_DIRECT)
        for _ in range(3):  # one being filled, one queued, one being written
            if pin:
                buffer = torch.empty(self.rows, width, dtype=self.dtype, pin_memory=True)
            else:
                buffer, memory = aligned_empty(self.rows, width, self.dtype)
                self.memory[buffer.data_ptr()] = memory
            self.free.put(buffer)
        self.buffer = self.free.get()
        self.steps: list[int] = []
        self.submitted_last = -1  # the last step of the chunks handed to the writer

    def meta(self, codec_name: str) -> dict:
        meta = {
            "shape": self.shape,
            "dtype": self.spec.dtype,
            "codec": codec_name,
            "columns": self.columns,
            "every": self.spec.every,
        }
        if self.proj is not None:
            meta["projection"] = {
                "kind": "countsketch",
                "source_dims": self.proj.source_dims,
                "dims": self.spec.project,
                "seed": self.spec.seed,
            }
        return meta

    def fill(self, parts: Parts) -> None:
        row = self.buffer[len(self.steps)]
        if self.keep is not None:
            parts = [parts[i] for i in self.keep]
        if self.proj is None and self.index is None:
            if self.non_blocking and len(parts) > 1:  # one D2H copy instead of one per part
                flat = torch.cat([p.detach().reshape(-1) for p in parts]).to(self.dtype)
                row.copy_(flat, non_blocking=True)
                return
            start = 0
            for p in parts:
                n = p.numel()
                row[start : start + n].copy_(p.detach().reshape(-1), non_blocking=self.non_blocking)
                start += n
            return
        flat = torch.cat([p.detach().reshape(-1) for p in parts])
        if self.index is not None:
            flat = flat.index_select(0, self.index)
        if self.proj is not None:
            flat = self.proj(flat)
        row.copy_(flat, non_blocking=self.non_blocking)


def _relabel(columns: dict, chosen: list[str]) -> dict[str, list[int]]:
    out, pos = {}, 0
    for lbl in chosen:
        n = columns[lbl][1] - columns[lbl][0]
        out[lbl], pos = [pos, pos + n], pos + n
    return out


class Recorder:
    """Records named trajectories under ``root`` (one folder each) in the background.

    Parameters
    ----------
    root : Path
        Folder holding one sub-folder per trajectory.
    attempt, resumed_from : int, int | None
        This attempt of the trial (0 fresh) and the checkpoint step it resumed from.
    chunk_steps : int
        Rows per chunk file (fewer for very wide rows: a chunk holds at most 32 MiB).
    compression : {"none", "lz4", "zstd"}
        Codec of the chunk files (Blosc with bit-shuffle; ``none``: memory-mappable ``.npy``).
    on_file : callable
        Called from the writer thread with (trajectory name, path) for every finished file.
    queue_chunks : int
        Chunks that may wait for the writer before ``record`` blocks (back-pressure).
    """

    def __init__(
        self,
        root: Path,
        attempt: int = 0,
        resumed_from: int | None = None,
        chunk_steps: int = 64,
        compression: str = "none",
        on_file: Callable[[str, Path], None] | None = None,
        queue_chunks: int = 2,
    ) -> None:
        self.root, self.attempt, self.resumed_from = Path(root), attempt, resumed_from
        self.chunk_steps, self.compression = chunk_steps, compression
        self.codec = codec(compression)
        self._direct = DirectWriter()
        self.on_file = on_file or (lambda name, path: None)
        self.series: dict[str, _Series] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=queue_chunks)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_loop, name="dynsweep-recorder", daemon=True
        )
        self._thread.start()

    # --- training thread -------------------------------------------------------------------
    def record(
        self,
        name: str,
        step: int,
        data: torch.Tensor | Parts,
        columns: dict[str, list[int]] | None = None,
        spec: RecordSpec | None = None,
    ) -> None:
        """Append ``data`` (a tensor, or a list of tensors recorded as their concatenation)
        as the row of trajectory ``name`` at ``step``."""
        self._raise_writer_error()
        parts = [data] if isinstance(data, torch.Tensor) else list(data)
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = self._start(
                name, spec or RecordSpec(probe=name), parts, columns or {}
            )
        series.fill(parts)
        series.steps.append(int(step))
        if len(series.steps) == series.rows:
            self._submit(series)

    def flush(self) -> None:
        """Write every recorded row and wait until it is on disk (before each checkpoint)."""
        for series in self.series.values():
            if series.steps:
                self._submit(series)
        self._queue.join()
        self._raise_writer_error()

    def discard_from(self, step: int) -> None:
        """Drop every row recorded at ``step`` or later in this attempt (the loop found a
        non-finite metric at ``step`` after recording past it). Rows still in memory are
        dropped; for rows already handed to the writer, a ``discard-{attempt}.json`` marker
        tells the reader to ignore them (:mod:`trainers.trajectory`)."""
        for series in self.series.values():
            series.steps = series.steps[: bisect.bisect_left(series.steps, step)]
            if series.submitted_last >= step:
                marker = self.root / series.name / f"discard-{self.attempt:03d}.json"
                atomic_write(marker, json.dumps({"from_step": int(step)}).encode())
                self._queue.put(partial(self.on_file, series.name, marker))

    def close(self) -> None:
        """Flush, then stop the writer thread."""
        try:
            self.flush()
        finally:
            self._queue.put(None)
            self._thread.join()

    def _start(self, name: str, spec: RecordSpec, parts: Parts, columns: dict) -> _Series:
        series = _Series(name, spec, parts, columns, self.chunk_steps)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            atomic_write(meta_path, json.dumps(series.meta(self.compression)).encode())
            self._queue.put(partial(self.on_file, name, meta_path))
        if self.resumed_from is not None:
            marker = folder / f"attempt-{self.attempt:03d}.json"
            atomic_write(marker, json.dumps({"resumed_from": self.resumed_from}).encode())
            self._queue.put(partial(self.on_file, name, marker))
        return series

    def _submit(self, series: _Series) -> None:
        event = None
        if series.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        job = partial(self._write, series, series.buffer, series.steps, event)
        series.submitted_last = series.steps[-1]
        self._queue.put(job)  # blocks while the queue is full
        series.buffer, series.steps = series.free.get(), []  # blocks until a buffer is free

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise DataError(f"recording to {self.root} failed: {self._error}") from self._error

    # --- writer thread ---------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            try:
                if self._error is None:
                    job()
            except BaseException as exc:  # surfaced in the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _write(self, series: _Series, buffer: torch.Tensor, steps: list[int], event) -> None:
        try:
            if event is not None:
                event.synchronize()
            folder = self.root / series.name
            stem = chunk_stem(self.attempt, steps[0], steps[-1])
            values = buffer[: len(steps)].numpy()
            if self.codec is None:  # straight from the buffer to the disk where it can
                values_path = folder / f"{stem}.npy"
                self._direct.write_npy(values_path, values, series.memory.get(buffer.data_ptr()))
            else:
                values_path = folder / f"{stem}.blosc"
                atomic_write(values_path, pack(self.codec.encode(np.ascontiguousarray(values))))
            steps_path = folder / f"{stem}.steps.npy"
            atomic_write(steps_path, np.asarray(steps, dtype=np.int64))
        finally:
            series.free.put(buffer)  # the buffer is free once its rows are on disk
        self.on_file(series.name, values_path)
        self.on_file(series.name, steps_path)
