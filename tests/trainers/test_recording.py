from __future__ import annotations

import numpy as np
import pytest
import torch

from dynsweep.errors import DataError
from trainers.recording import Recorder, read_trajectory


def record_steps(rec: Recorder, steps, scale=1.0):
    for s in steps:
        rec.record("w", s, torch.full((3,), float(s) * scale), {"a": [0, 1], "b": [1, 3]})


def test_round_trip_with_partial_chunks_and_slices(tmp_path):
    files = []
    rec = Recorder(tmp_path, chunk_steps=4, on_file=lambda n, p: files.append(p.name))
    record_steps(rec, range(10))
    rec.flush()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, np.arange(10))
    np.testing.assert_array_equal(traj.values[:, 0], np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(traj.column("b"), np.repeat(np.arange(10.0), 2).reshape(10, 2))
    part = read_trajectory(tmp_path / "w", steps=slice(3, 7))
    np.testing.assert_array_equal(part.steps, [3, 4, 5, 6])
    assert "meta.json" in files and sum(f.endswith(".steps.npy") for f in files) == 3


def test_unflushed_rows_are_lost_but_flushed_chunks_stay_readable(tmp_path):
    rec = Recorder(tmp_path, chunk_steps=4)
    record_steps(rec, range(7))  # one chunk of 4 written, 3 rows buffered: a crash loses those
    (tmp_path / "w" / "c000-000000099-000000100.npy.tmp").write_bytes(b"half a file")
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, [0, 1, 2, 3])


def test_resumed_attempt_replaces_rows_after_its_checkpoint(tmp_path):
    first = Recorder(tmp_path, chunk_steps=4)
    record_steps(first, range(11))  # steps 0..7 flushed (checkpoint at 5, crash after 10)
    second = Recorder(tmp_path, attempt=1, resumed_from=5, chunk_steps=4)
    record_steps(second, range(6, 9), scale=-1)  # the retry got to step 8, then died too
    second.flush()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, np.arange(9))
    np.testing.assert_array_equal(traj.values[:, 0], [0, 1, 2, 3, 4, 5, -6, -7, -8])


def test_older_attempt_rows_beyond_a_later_resume_point_are_dropped(tmp_path):
    first = Recorder(tmp_path, chunk_steps=2)
    record_steps(first, range(8))
    first.flush()
    second = Recorder(tmp_path, attempt=1, resumed_from=3, chunk_steps=2)
    record_steps(second, [4], scale=10)
    second.flush()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, [0, 1, 2, 3, 4])
    assert traj.values[-1, 0] == 40


def test_damaged_chunk_is_named_in_the_error(tmp_path):
    rec = Recorder(tmp_path, chunk_steps=2)
    record_steps(rec, range(2))
    chunk = next((tmp_path / "w").glob("c000-*[0-9].npy"))
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(DataError, match=chunk.name):
        read_trajectory(tmp_path / "w")
    with pytest.raises(DataError, match="meta.json is missing"):
        read_trajectory(tmp_path)
