"""The on-disk format of a recorded trajectory, and its reader.

One trajectory is a folder::

    meta.json                                    row shape, dtype, codec, column labels,
                                                 projection (seed, dims) if any
    c{attempt:03d}-{first:09d}-{last:09d}.npy    n rows, uncompressed (memory-mapped on read)
    c{attempt:03d}-{first:09d}-{last:09d}.blosc  n rows, compressed with numcodecs' Blosc
    c{attempt:03d}-{first:09d}-{last:09d}.steps.npy   the n step numbers (written last)
    attempt-{attempt:03d}.json                   {"resumed_from": step} of a resumed attempt
    discard-{attempt:03d}.json                   {"from_step": step}: that attempt's rows from
                                                 this step on are void (a non-finite metric
                                                 found after they were written)

Every file is written under a temporary name and renamed into place, so a crash leaves whole
chunks or none; a chunk counts once its ``.steps.npy`` exists. For each step the newest attempt
covering it wins, and rows of older attempts past a later attempt's resume point are dropped:
a resumed trial's trajectory reads back without gaps or duplicates; rows an attempt voided
with a ``discard`` marker are dropped too.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynsweep.errors import DataError

CHUNK = re.compile(r"^c(\d{3})-(\d{9})-(\d{9})\.steps\.npy$")


def codec(name: str):
    """The numcodecs codec of a compression name (``none`` → ``None``)."""
    if name == "none":
        return None
    from numcodecs import Blosc, blosc

    blosc.set_nthreads(1)  # the training loop owns the cores
    level = 1 if name == "zstd" else 5
    return Blosc(cname=name, clevel=level, shuffle=Blosc.BITSHUFFLE)


MAGIC = b"DSW1"


def pack(payload: bytes) -> bytes:
    """Frame a compressed chunk: magic, length and CRC32, so damage is detected on read
    (a truncated Blosc buffer can decode to garbage without an error)."""
    return MAGIC + struct.pack("<QI", len(payload), zlib.crc32(payload)) + payload


def unpack(data: bytes, path: Path) -> bytes:
    head = len(MAGIC) + 12
    if len(data) < head or data[: len(MAGIC)] != MAGIC:
        raise DataError(f"{path}: not a dynsweep trajectory chunk (bad header)")
    length, crc = struct.unpack("<QI", data[len(MAGIC) : head])
    payload = data[head:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise DataError(
            f"{path}: damaged trajectory chunk ({len(payload)} of {length} bytes, "
            "checksum mismatch)"
        )
    return payload


def atomic_write(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if isinstance(data, np.ndarray):
            np.save(f, data)
        else:
            f.write(data)
    os.replace(tmp, path)


def chunk_stem(attempt: int, first: int, last: int) -> str:
    return f"c{attempt:03d}-{first:09d}-{last:09d}"


@dataclass
class Trajectory:
    """A recorded trajectory read back: ``values[i]`` was recorded at ``steps[i]``."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    columns: dict[str, list[int]]
    meta: dict

    def column(self, label: str) -> np.ndarray:
        """The values of one labelled block (e.g. a layer's weights), flattened per step."""
        start, stop = self.columns[label]
        return self.values.reshape(len(self.steps), -1)[:, start:stop]

    def projection(self):
        """The random projection used when recording (a :class:`trainers.sketch.Sketch`,
        regenerated from its seed; apply it to compare other vectors in the same space)."""
        proj = self.meta.get("projection")
        if not proj:
            return None
        from trainers.sketch import Sketch

        return Sketch(proj["source_dims"], proj["dims"], proj["seed"])


def _select_columns(meta: dict, columns) -> tuple[np.ndarray | None, dict[str, list[int]]]:
    """Column indices (or None for all) and the labels of what remains."""
    labels = meta.get("columns") or {}
    if columns is None:
        return None, labels
    if isinstance(columns, str):
        columns = [columns]
    if isinstance(columns, slice):
        width = int(np.prod(meta["shape"]))
        return np.arange(width)[columns], {}
    picked, out, pos = [], {}, 0
    for label in columns:
        if label not in labels:
            raise DataError(f"trajectory has no column block {label!r}; it has: {list(labels)}")
        start, stop = labels[label]
        picked.append(np.arange(start, stop))
        out[label] = [pos, pos + stop - start]
        pos += stop - start
    return np.concatenate(picked), out


def read_trajectory(folder: Path, steps: slice | None = None, columns=None) -> Trajectory:
    """Read a trajectory folder lazily: only chunks holding the selected steps are opened.

    ``steps`` is a slice over step numbers (``slice(100, 200)``); ``columns`` a label, a list
    of labels (e.g. parameter names) or a slice of flat columns.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: not a recorded trajectory (meta.json is missing)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder / 'meta.json'}: damaged ({exc})") from None
    resumed = {
        int(p.stem.split("-")[1]): json.loads(p.read_text())["resumed_from"]
        for p in folder.glob("attempt-*.json")
    }
    void = {  # attempt -> first step whose rows it voided
        int(p.stem.split("-")[1]): json.loads(p.read_text())["from_step"]
        for p in folder.glob("discard-*.json")
    }
    chunks = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHUNK.match(p.name)))
    best: dict[int, tuple[int, Path, int]] = {}  # step -> (attempt, steps file, row)
    for attempt, steps_path in chunks:
        limits = [s for a, s in resumed.items() if a > attempt]
        if attempt in void:
            limits.append(void[attempt] - 1)
        limit = min(limits, default=None)
        try:
            chunk_steps = np.load(steps_path)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{steps_path}: unreadable trajectory chunk ({exc})") from exc
        for row, s in enumerate(chunk_steps.tolist()):
            if (limit is None or s <= limit) and (s not in best or best[s][0] <= attempt):
                best[s] = (attempt, steps_path, row)
    selected = sorted(best)
    if steps is not None:
        lo = -np.inf if steps.start is None else steps.start
        hi = np.inf if steps.stop is None else steps.stop
        selected = [s for s in selected if lo <= s < hi][:: steps.step or 1]
    index, labels = _select_columns(meta, columns)
    width = int(np.prod(meta["shape"])) if index is None else len(index)
    out = np.empty((len(selected), width), dtype=np.dtype(meta["dtype"]))
    by_chunk: dict[Path, tuple[list[int], list[int]]] = {}  # chunk -> (rows in out, rows in it)
    for i, s in enumerate(selected):
        _, steps_path, row = best[s]
        positions, rows = by_chunk.setdefault(steps_path, ([], []))
        positions.append(i)
        rows.append(row)
    for steps_path, (positions, rows) in by_chunk.items():  # one block copy per chunk
        values = _load_values(steps_path, meta)[rows].reshape(len(rows), -1)
        out[positions] = values if index is None else values[:, index]
    if index is None:
        out = out.reshape(len(selected), *meta["shape"])
    return Trajectory(folder.name, np.asarray(selected, dtype=np.int64), out, labels, meta)


def _load_values(steps_path: Path, meta: dict) -> np.ndarray:
    stem = steps_path.name[: -len(".steps.npy")]
    suffix = ".npy" if meta.get("codec", "none") == "none" else ".blosc"
    path = steps_path.with_name(stem + suffix)
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r")
        raw = codec(meta["codec"]).decode(unpack(path.read_bytes(), path))
        return np.frombuffer(raw, dtype=np.dtype(meta["dtype"])).reshape(-1, *meta["shape"])
    except (ValueError, OSError, RuntimeError, EOFError) as exc:
        raise DataError(f"{path}: unreadable trajectory chunk ({exc})") from exc
