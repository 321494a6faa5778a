"""The IDX loader on generated files: round trip, gzip, where files are found, every error
naming its file (wrong magic number, truncated data, broken gzip, a missing file offline)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from dynsweep.errors import DataError
from trainers import idx
from trainers.data import load_dataset


def write_idx(path, array: np.ndarray, code: int = 0x08, gz: bool = False) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_split(folder, split: str, n: int, seed: int, gz: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    images_stem, labels_stem = idx._STEMS[split]
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{images_stem}{suffix}", images, gz=gz)
    write_idx(folder / f"{labels_stem}{suffix}", labels, gz=gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, gz):
    for code, dtype in idx._TYPES.items():
        array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
        path = tmp_path / (f"a{code}.idx" + (".gz" if gz else ""))
        write_idx(path, array, code, gz)
        out = idx.read_idx(path)
        assert out.dtype.isnative and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, array)


def test_wrong_magic_number_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x1f\x8b\x08\x03" + bytes(100))  # a gzip header read as plain IDX
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: wrong magic number 0x1f8b"):
        idx.read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"wrong magic number 0x\(empty file\)"):
        idx.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_one_clear_error(tmp_path, gz):
    full = tmp_path / "full"
    write_idx(full, np.zeros((10, 28, 28), np.uint8))
    data = full.read_bytes()[:-100]
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as err:
        idx.read_idx(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message
    assert "10×28×28" in message and f"holds {len(data)}" in message


def test_truncated_header_and_broken_gzip(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="short: truncated header: 3 dimensions need 16 bytes"):
        idx.read_idx(path)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(50))[:-12])
    with pytest.raises(DataError, match="broken.gz: not a readable gzip file"):
        idx.read_idx(broken)


def test_load_split_reads_each_layout(tmp_path):
    # plain files straight in data_dir, gzipped in data_dir/<name>, torchvision's raw/ folder
    for folder, gz, name in [
        (tmp_path / "a", False, "mnist"),
        (tmp_path / "b" / "fashion_mnist", True, "fashion_mnist"),
        (tmp_path / "c" / "MNIST" / "raw", True, "mnist"),
    ]:
        images, labels = make_split(folder, "test", 7, seed=1, gz=gz)
        data_dir = {"a": tmp_path / "a", "b": tmp_path / "b", "c": tmp_path / "c"}[
            folder.relative_to(tmp_path).parts[0]
        ]
        x, y = idx.load_split(name, data_dir, "test", download=False)
        assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
        torch.testing.assert_close(x[:, 0], torch.tensor(images, dtype=torch.float32) / 255)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_load_dataset_gives_train_and_test(tmp_path):
    train = make_split(tmp_path, "train", 12, seed=2)
    test = make_split(tmp_path, "test", 5, seed=3)
    (xt, yt), (xv, yv) = load_dataset("mnist", tmp_path, 0.2, 0)
    assert len(xt) == 12 and len(xv) == 5
    assert yt.tolist() == train[1].tolist() and yv.tolist() == test[1].tolist()


def test_mismatched_images_and_labels(tmp_path):
    make_split(tmp_path, "test", 5, seed=3)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DataError, match=r"holds \(5, 28, 28\) and .*t10k-labels.* \(4,\)"):
        idx.load_split("mnist", tmp_path, "test", download=False)


def test_missing_files_offline_name_the_folders(tmp_path, monkeypatch):
    monkeypatch.setitem(idx.SOURCES["mnist"], "mirrors", ("http://127.0.0.1:9/",))
    monkeypatch.setitem(idx.SOURCES["mnist"], "system", ())
    with pytest.raises(DataError) as err:
        idx.load_split("mnist", tmp_path, "train")
    message = str(err.value)
    assert "train-images-idx3-ubyte[.gz] is in none of" in message and str(tmp_path) in message
    assert "downloading it failed" in message and "127.0.0.1:9" in message
    with pytest.raises(DataError, match="unknown split 'val'"):
        idx.load_split("mnist", tmp_path, "val")
