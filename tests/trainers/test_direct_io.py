"""Chunks written with O_DIRECT from page-aligned buffers read back as ordinary .npy files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import direct_io
from trainers.direct_io import PAGE, DirectWriter, aligned_empty, npy_header
from trainers.recording import Recorder, RecordSpec
from trainers.trajectory import read_trajectory


def takes_o_direct(folder: Path) -> bool:
    """Whether ``folder``'s file system opens files with O_DIRECT (where it does, the writer
    must have used it)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    finally:
        (folder / "probe").unlink(missing_ok=True)
    return True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows", [5, 2, 1])  # a full buffer, then parts of it
def test_a_direct_chunk_reads_back_exactly_and_has_its_true_size(tmp_path, dtype, rows):
    buffer, memory = aligned_empty(5, 1000, dtype)  # 5 × 1000 × 4 bytes: not whole pages
    assert buffer.data_ptr() % PAGE == 0 and len(memory) % PAGE == 0
    buffer.copy_(torch.randn(5, 1000))
    writer = DirectWriter()
    writer.write_npy(tmp_path / "c.npy", buffer[:rows].numpy(), memory)
    assert writer.direct == takes_o_direct(tmp_path)
    expected = buffer[:rows].numpy()
    back = np.load(tmp_path / "c.npy")
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    assert back.dtype == expected.dtype and back.shape == (rows, 1000)
    assert np.array_equal(back, expected) and np.array_equal(mapped, expected)
    assert (tmp_path / "c.npy").stat().st_size == PAGE + expected.nbytes
    assert not list(tmp_path.glob("*.tmp"))


def test_the_header_is_one_page_of_valid_npy_1_0():
    header = npy_header(np.dtype("<f2"), (3, 7))
    assert len(header) == PAGE and header.endswith(b"\n")
    path = Path(tempfile.mkdtemp()) / "h.npy"
    path.write_bytes(header + np.arange(21, dtype="<f2").tobytes())
    assert np.array_equal(np.load(path), np.arange(21, dtype="<f2").reshape(3, 7))


def test_where_o_direct_is_refused_the_same_file_goes_through_the_page_cache(tmp_path, monkeypatch):
    buffer, memory = aligned_empty(3, 100, torch.float32)
    buffer.copy_(torch.arange(300.0).reshape(3, 100))
    refused = []
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            refused.append(path)
            raise OSError(22, "Invalid argument")  # what tmpfs answers
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", no_direct)
    writer = DirectWriter()
    for name in ("a.npy", "b.npy"):
        writer.write_npy(tmp_path / name, buffer[:2].numpy(), memory)
        assert np.array_equal(np.load(tmp_path / name), buffer[:2].numpy())
    assert not writer.direct and len(refused) <= 1  # tried once, then remembered
    # memory not from aligned_empty (or none given): the page cache, the same bytes
    plain = np.arange(10, dtype=np.float32).reshape(2, 5)
    DirectWriter().write_npy(tmp_path / "p.npy", plain)
    assert np.array_equal(np.load(tmp_path / "p.npy"), plain)


def test_a_recorder_whose_file_system_refuses_o_direct_still_writes_every_row(
    tmp_path, monkeypatch
):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", no_direct)
    rec = Recorder(tmp_path, chunk_steps=4)
    weights = [torch.zeros(3, 5), torch.zeros(5)]
    for step in range(10):
        for w in weights:
            w.fill_(step)
        rec.record("w", step, weights, spec=RecordSpec(probe="w"))
    rec.close()
    assert not rec._direct.direct
    traj = read_trajectory(tmp_path / "w")
    assert traj.steps.tolist() == list(range(10))
    assert np.array_equal(traj.values, np.repeat(np.arange(10.0), 20).reshape(10, 20))


def test_a_recorder_writes_its_chunks_directly(tmp_path):
    rec = Recorder(tmp_path, chunk_steps=3)
    x = torch.zeros(1000)
    for step in range(7):
        rec.record("x", step, x.fill_(step))
    rec.close()
    assert rec._direct.direct == takes_o_direct(tmp_path)
    traj = read_trajectory(tmp_path / "x")
    assert traj.steps.tolist() == list(range(7)) and traj.values[:, 0].tolist() == list(range(7))
    sizes = sorted(p.stat().st_size for p in (tmp_path / "x").glob("c*-*[0-9].npy"))
    assert sizes == [PAGE + 1 * 4000, PAGE + 3 * 4000, PAGE + 3 * 4000]


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    """An OSError without a file name (ENOSPC from write()) is raised naming the chunk."""
    import errno

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(direct_io.os, "replace", full)
    buffer, memory = aligned_empty(2, 10, torch.float32)
    with pytest.raises(OSError, match="No space left on device") as info:
        DirectWriter().write_npy(tmp_path / "c000-1.npy", buffer.numpy(), memory)
    assert info.value.filename == str(tmp_path / "c000-1.npy")
