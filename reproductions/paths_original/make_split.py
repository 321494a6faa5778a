"""Write the row permutation of dynsweep's UCI split as an ``.npy`` file of indices.

    python reproductions/paths_original/make_split.py --n 768 --seed 0 --out split_seed0.npy

dynsweep shuffles a UCI set's rows with ``torch.randperm(n, generator=torch.Generator()
.manual_seed(seed))`` (``trainers/paths/data.py``, ``uci``). ``run_original.py`` runs in the
original's JAX environment, which has no torch, so it reads that permutation from this file
(``--split``). Run this with any Python that has torch and NumPy (the project's).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def permutation(n: int, seed: int) -> np.ndarray:
    """dynsweep's row order for a set of ``n`` rows and ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, help="number of rows (else counted from --data)")
    ap.add_argument("--data", help="the .data file whose rows are counted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.n is None and args.data is None:
        ap.error("give --n or --data")
    n = args.n if args.n is not None else len(np.genfromtxt(args.data, delimiter=" "))
    np.save(args.out, permutation(n, args.seed))
    print(f"{args.out}: permutation of {n} rows, seed {args.seed}")


if __name__ == "__main__":
    main()
