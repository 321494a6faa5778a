"""MNIST-format (IDX) image datasets: read the standard files, find them, download them.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values. ``read_idx`` reads one, plain or gzipped,
and names the file in every error (wrong magic number, truncated data, a broken gzip stream).

``load_split(name, data_dir, split)`` finds a dataset's standard files (``train-images-idx3-
ubyte[.gz]`` and so on) in ``data_dir``, ``data_dir/<name>``, torchvision's
``data_dir/MNIST/raw`` layout or a system folder (Debian's ``dataset-fashion-mnist`` package
puts Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``), and otherwise downloads them into
``data_dir/<name>`` from the mirrors torchvision uses, checking each file's MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from dynsweep.errors import DataError

# IDX type codes (the third byte of the magic number) and the numpy dtype of each (big-endian)
_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# name -> (torchvision's folder name, download mirrors, MD5 of each gzipped file, system folders)
SOURCES: dict[str, dict] = {
    "mnist": {
        "torchvision": "MNIST",
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "system": ("/usr/share/datasets/mnist",),
    },
    "fashion_mnist": {
        "torchvision": "FashionMNIST",
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "system": ("/usr/share/datasets/fashion-mnist",),
    },
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in IDX file ``path`` (gzipped when its name ends in ``.gz``)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"IDX file {path}: not found") from exc
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"IDX file {path}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
        magic = raw[:4].hex() or "(empty file)"
        raise DataError(
            f"IDX file {path}: wrong magic number 0x{magic}; expected 0x0000TTNN with type TT in "
            f"{', '.join(f'{t:02x}' for t in _TYPES)} and NN ≥ 1 dimensions (e.g. 0x00000803 "
            "for images, 0x00000801 for labels)"
        )
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"IDX file {path}: truncated header: {ndim} dimensions need {header} bytes, "
            f"the file holds {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path}: {what}: its header says {'×'.join(map(str, shape))} values of "
            f"{dtype.itemsize} byte(s), {expected} bytes in all; the file holds {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _folders(name: str, data_dir: Path) -> list[Path]:
    src = SOURCES[name]
    return [
        data_dir,
        data_dir / name,
        data_dir / src["torchvision"] / "raw",
        *(Path(p) for p in src["system"]),
    ]


def find_file(name: str, data_dir: Path, stem: str) -> Path | None:
    """The first ``stem`` or ``stem.gz`` in the folders searched for ``name``, or None."""
    for folder in _folders(name, data_dir):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _download(name: str, data_dir: Path, stem: str) -> Path:
    import urllib.request

    src, filename = SOURCES[name], f"{stem}.gz"
    target = data_dir / name / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in src["mirrors"]:
        try:
            with urllib.request.urlopen(mirror + filename, timeout=30) as response:
                data = response.read()
        except OSError as exc:  # URLError, timeouts, refused connections
            errors.append(f"{mirror}: {exc}")
            continue
        digest = hashlib.md5(data).hexdigest()
        if digest != src["md5"][filename]:
            errors.append(f"{mirror}: MD5 {digest}, expected {src['md5'][filename]}")
            continue
        partial = target.with_suffix(".gz.part")
        partial.write_bytes(data)
        partial.replace(target)
        return target
    looked = ", ".join(str(p) for p in _folders(name, data_dir))
    raise DataError(
        f"dataset {name!r}: {stem}[.gz] is in none of {looked}, and downloading it failed "
        f"({'; '.join(errors)}). Without network access, copy the standard IDX files "
        f"(e.g. {filename}) into {data_dir / name}."
    )


def load_split(
    name: str, data_dir: str | os.PathLike, split: str = "train", download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 N×1×H×W in [0, 1], labels int64) of ``split`` ("train" | "test")."""
    if name not in SOURCES:
        raise DataError(f"dataset: no IDX files known for {name!r}; expected {sorted(SOURCES)}")
    if split not in _STEMS:
        raise DataError(f"dataset {name!r}: unknown split {split!r}; expected train or test")
    data_dir = Path(data_dir)
    arrays = []
    for stem in _STEMS[split]:
        path = find_file(name, data_dir, stem)
        if path is None:
            if not download:
                raise DataError(f"dataset {name!r}: {stem}[.gz] not found under {data_dir}")
            path = _download(name, data_dir, stem)
        arrays.append((path, read_idx(path)))
    (ipath, images), (lpath, labels) = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"dataset {name!r}: {ipath} holds {images.shape} and {lpath} {labels.shape}; "
            "expected N×H×W images and N labels"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))
