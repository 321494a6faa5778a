from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from dynsweep.errors import DataError
from trainers.recording import Recorder, RecordSpec, Sketch
from trainers.trajectory import read_trajectory

COLUMNS = {"a": [0, 1], "b": [1, 3]}


def record_steps(rec: Recorder, steps, scale=1.0, spec=None):
    for s in steps:
        parts = [torch.full((1,), float(s) * scale), torch.full((2,), float(s) * scale)]
        rec.record("w", s, parts, COLUMNS, spec)


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_round_trip_with_partial_chunks_slices_and_columns(tmp_path, compression):
    files = []
    rec = Recorder(
        tmp_path, chunk_steps=4, compression=compression, on_file=lambda n, p: files.append(p.name)
    )
    record_steps(rec, range(10))
    rec.close()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, np.arange(10))
    np.testing.assert_array_equal(traj.values[:, 0], np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(traj.column("b"), np.repeat(np.arange(10.0), 2).reshape(10, 2))
    part = read_trajectory(tmp_path / "w", steps=slice(3, 7), columns=["b"])
    np.testing.assert_array_equal(part.steps, [3, 4, 5, 6])
    np.testing.assert_array_equal(part.values, [[3, 3], [4, 4], [5, 5], [6, 6]])
    assert part.columns == {"b": [0, 2]}
    assert "meta.json" in files and sum(f.endswith(".steps.npy") for f in files) == 3


def test_submitted_chunks_survive_a_crash_and_buffered_rows_do_not(tmp_path):
    rec = Recorder(tmp_path, chunk_steps=4)
    record_steps(rec, range(7))  # one chunk of 4 handed to the writer, 3 rows still buffered
    rec._queue.join()  # the writer finished; the process "dies" here, before any flush
    (tmp_path / "w" / "c000-000000099-000000100.npy.tmp").write_bytes(b"half a file")
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, [0, 1, 2, 3])


def test_resumed_attempt_replaces_rows_after_its_checkpoint(tmp_path):
    first = Recorder(tmp_path, chunk_steps=4)
    record_steps(first, range(11))  # steps 0..7 written (checkpoint at 5, crash after 10)
    first._queue.join()
    second = Recorder(tmp_path, attempt=1, resumed_from=5, chunk_steps=4)
    record_steps(second, range(6, 9), scale=-1)  # the retry got to step 8, then died too
    second.close()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, np.arange(9))
    np.testing.assert_array_equal(traj.values[:, 0], [0, 1, 2, 3, 4, 5, -6, -7, -8])


def test_older_attempt_rows_beyond_a_later_resume_point_are_dropped(tmp_path):
    first = Recorder(tmp_path, chunk_steps=2)
    record_steps(first, range(8))
    first.close()
    second = Recorder(tmp_path, attempt=1, resumed_from=3, chunk_steps=2)
    record_steps(second, [4], scale=10)
    second.close()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.steps, [0, 1, 2, 3, 4])
    assert traj.values[-1, 0] == 40


def test_float16_selection_and_projection(tmp_path):
    rec = Recorder(tmp_path, chunk_steps=3)
    x = torch.randn(10, 3)
    for s in range(10):
        parts = [x[s, :1], x[s, 1:]]
        rec.record("half", s, parts, COLUMNS, RecordSpec(probe="w", dtype="float16"))
        rec.record("sel", s, parts, COLUMNS, RecordSpec(probe="w", select=("b",)))
        rec.record("proj", s, parts, COLUMNS, RecordSpec(probe="w", project=2, seed=7))
        rec.record("flat", s, x[s], COLUMNS, RecordSpec(probe="w", select=("a",)))
    rec.close()
    half = read_trajectory(tmp_path / "half")
    assert half.values.dtype == np.float16
    np.testing.assert_allclose(half.values, x.numpy(), rtol=1e-3, atol=1e-3)
    sel = read_trajectory(tmp_path / "sel")
    np.testing.assert_array_equal(sel.values, x[:, 1:].numpy())
    assert sel.columns == {"b": [0, 2]}
    np.testing.assert_array_equal(read_trajectory(tmp_path / "flat").values, x[:, :1].numpy())
    proj = read_trajectory(tmp_path / "proj")
    sketch = proj.projection()
    np.testing.assert_allclose(proj.values, sketch(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(proj.values, x.numpy() @ sketch.matrix().numpy(), rtol=1e-6)
    assert proj.meta["projection"] == {
        "kind": "countsketch",
        "source_dims": 3,
        "dims": 2,
        "seed": 7,
    }


def test_sketch_preserves_inner_products_on_average():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 50_000, generator=gen)
    sketch = Sketch(50_000, 4096, seed=1)
    assert abs(float(sketch(x) @ sketch(y)) - float(x @ y)) < 0.05 * float(x.norm() * y.norm())
    assert abs(float(sketch(x).norm() / x.norm()) - 1) < 0.05


def test_slow_writer_applies_back_pressure(tmp_path):
    release = threading.Event()
    rec = Recorder(
        tmp_path, chunk_steps=1, queue_chunks=1, on_file=lambda name, path: release.wait(30)
    )
    done = threading.Event()

    def produce():
        record_steps(rec, range(10))
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    assert not done.wait(1.0)  # blocked: 3 buffers and a queue of 1 hold at most a few rows
    assert len(rec.series["w"].steps) <= 1
    release.set()
    thread.join(30)
    assert done.is_set()
    rec.close()
    np.testing.assert_array_equal(read_trajectory(tmp_path / "w").steps, np.arange(10))


def test_writer_errors_surface_in_the_training_thread(tmp_path):
    def broken(name, path):
        raise OSError("disk full")

    rec = Recorder(tmp_path, chunk_steps=1, on_file=broken)
    with pytest.raises(DataError, match="disk full"):
        record_steps(rec, range(3))
        rec.flush()


@pytest.mark.parametrize("compression, suffix", [("none", ".npy"), ("lz4", ".blosc")])
def test_damaged_chunk_is_named_in_the_error(tmp_path, compression, suffix):
    rec = Recorder(tmp_path, chunk_steps=2, compression=compression)
    record_steps(rec, range(2))
    rec.close()
    chunk = next((tmp_path / "w").glob(f"c000-*[0-9]{suffix}"))
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    with pytest.raises(DataError, match=chunk.name):
        read_trajectory(tmp_path / "w")
    with pytest.raises(DataError, match="meta.json is missing"):
        read_trajectory(tmp_path)


def test_the_cpu_sketch_equals_the_index_add_one_to_rounding():
    """On a CPU the sketch runs as a CSR matrix; on a GPU with index_add_: the same map."""
    sketch = Sketch(20_000, 512, seed=3)
    x = torch.randn(4, 20_000, generator=torch.Generator().manual_seed(1))
    reference = torch.zeros(4, 512).index_add_(-1, sketch.bucket, x * sketch.sign)
    torch.testing.assert_close(sketch(x), reference, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sketch(x[1]), reference[1], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sketch(x[:2].reshape(2, 1, 20_000))[:, 0], reference[:2])
