"""Image datasets as in-memory tensors.

``DATASETS`` maps a stable name to a loader returning ``(train, val)`` splits, each a pair of
``images`` (float32, N×C×H×W in [0, 1]) and ``labels`` (int64). ``digits`` ships with
scikit-learn and needs no network; ``mnist`` and ``fashion_mnist`` are the standard IDX files
(train split = the 60,000 training images, val = the 10,000 test images), found in
``data_dir`` or a system folder or downloaded into ``data_dir`` once (``trainers/idx.py``),
with a clear message naming the file when that is impossible.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dynsweep.errors import DataError

Split = tuple[torch.Tensor, torch.Tensor]


def _digits(data_dir: Path, val_fraction: float, seed: int) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * len(labels))))
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def _idx(name: str) -> Callable[[Path, float, int], tuple[Split, Split]]:
    def load(data_dir: Path, val_fraction: float, seed: int) -> tuple[Split, Split]:
        from trainers.idx import load_split

        return load_split(name, data_dir, "train"), load_split(name, data_dir, "test")

    return load


DATASETS: dict[str, Callable[[Path, float, int], tuple[Split, Split]]] = {
    "digits": _digits,
    "mnist": _idx("mnist"),
    "fashion_mnist": _idx("fashion_mnist"),
}


def load_dataset(name: str, data_dir: Path, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Load dataset ``name`` as ``(train, val)`` tensors; the error lists the valid names."""
    if name not in DATASETS:
        raise DataError(f"dataset: unknown dataset {name!r}; expected one of: {sorted(DATASETS)}")
    return DATASETS[name](Path(data_dir), val_fraction, seed)


def image_shape(name: str) -> tuple[int, int, int]:
    """C×H×W of dataset ``name`` without loading it."""
    return (1, 8, 8) if name == "digits" else (1, 28, 28)


class Batches:
    """Indices of minibatches: shuffled passes over ``n`` items, one after another, from a
    seeded generator; ``state_dict`` resumes the exact sequence."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0

    def __len__(self) -> int:
        """Batches in one pass (the last may be short)."""
        return -(-self.n // self.batch_size)

    def next(self) -> torch.Tensor:
        if self.position >= self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "order": self.order,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])
