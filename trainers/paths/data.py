"""Regression data of the paths study: the toy problem (generated), sklearn's diabetes,
UCI-style CSV files (70/10/20 train/val/test splits, standardised with the training split) and
the UCI sets the original ships (:func:`uci`: split and standardised as the original)."""

from __future__ import annotations

from pathlib import Path

import torch

from dynsweep.errors import DataError

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def toy_regression(seed: int = 0, n: int = 300, noise: float = 0.05) -> Splits:
    """x on [−2, 2] without |x| ≤ 0.6, y from a random ground-truth MLP (1-10-10-1, tanh) plus
    N(0, noise²); features [x, x², x³]. The gap makes in-between uncertainty visible."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(0)
    while len(x) < n:
        draw = torch.rand(2 * n, generator=gen) * 4 - 2
        x = torch.cat([x, draw[draw.abs() > 0.6]])
    x = x[:n, None]
    w1, w2, w3 = (torch.randn(a, b, generator=gen) for a, b in [(1, 10), (10, 10), (10, 1)])
    y = torch.tanh(torch.tanh(x @ w1) @ w2) @ w3 + noise * torch.randn(n, 1, generator=gen)
    return _split(torch.cat([x, x**2, x**3], 1), y, seed)


def diabetes(seed: int = 0) -> Splits:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.float32)[:, None]
    return _split(x, y, seed)


def csv_regression(path: str | Path, seed: int = 0) -> Splits:
    """A UCI-style file: numeric columns, the last one the target (header line optional)."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file {path} not found (a CSV of numbers, target last)")
    try:
        data = np.genfromtxt(path, delimiter=",", skip_header=0)
        if np.isnan(data[0]).any():
            data = data[1:]
    except ValueError as exc:
        raise DataError(f"{path}: not a CSV of numbers ({exc})") from exc
    if data.ndim != 2 or data.shape[1] < 2 or np.isnan(data).any():
        raise DataError(f"{path}: expected a table of numbers with ≥ 2 columns, no gaps")
    t = torch.tensor(data, dtype=torch.float32)
    return _split(t[:, :-1], t[:, -1:], seed)


UCI = ("energy", "airfoil", "concrete", "yacht")
UCI_DIR = Path(__file__).parent / "uci"


def uci(name: str, seed: int = 0, folder: Path = UCI_DIR) -> Splits:
    """A UCI set as the original (Dold et al., ``TabularLoader`` with ``normalize=True`` and
    splits 0.7 / 0.1 / 0.2) prepares it: every column, the target too, standardised by the whole
    file's mean and population standard deviation; the rows shuffled; the first
    ``int(0.7 n)`` rows train, the rows up to ``int(0.8 n)`` validation, the rest test. The
    shuffle is ``torch.randperm`` with ``seed`` (the original draws it with JAX's PRNG: the
    same procedure, other permutations)."""
    import numpy as np

    path = Path(folder) / f"{name}.data"
    if not path.exists():
        raise DataError(f"dataset {name!r}: file {path} not found (expected one of {UCI})")
    data = np.genfromtxt(path, delimiter=" ")
    if data.ndim != 2 or data.shape[1] < 2 or np.isnan(data).any():
        raise DataError(f"{path}: expected space-separated numbers, target last, no gaps")
    t = torch.tensor(data, dtype=torch.float64)
    t = ((t - t.mean(0)) / t.std(0, correction=0)).float()
    t = t[torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))]
    a, b = int(len(t) * 0.7), int(len(t) * (0.7 + 0.1))
    parts = {"train": t[:a], "val": t[a:b], "test": t[b:]}
    return {k: (v[:, :-1], v[:, -1:]) for k, v in parts.items()}


def _split(x: torch.Tensor, y: torch.Tensor, seed: int) -> Splits:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.7 * len(x)), int(0.1 * len(x))
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    xm, xs = x[parts["train"]].mean(0), x[parts["train"]].std(0).clamp_min(1e-8)
    ym, ys = y[parts["train"]].mean(0), y[parts["train"]].std(0).clamp_min(1e-8)
    return {k: ((x[i] - xm) / xs, (y[i] - ym) / ys) for k, i in parts.items()}
