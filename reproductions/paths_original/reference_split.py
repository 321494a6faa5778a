"""Reference values of the original's UCI loader, for ``tests/test_paths_original.py``.

    PYTHON_OF_ORIGINAL reproductions/paths_original/reference_split.py --original DIR [--data F]

Runs the original's ``TabularLoader`` (``proba_sandbox/module_sandbox/dataset/tabular.py``:
``normalize=True``, splits 0.7 / 0.1 / 0.2, ``rng=jax.random.PRNGKey(seed)``) on a fixed
synthetic 20 × 5 file (``(7 i + 3 j) mod 11 + 0.5 j + 0.1 i``, written with ``%.2f``) and
prints its permutation and split values; with ``--data`` also the sizes it cuts that file into
and how far its float32 standardisation is from float64-then-float32 on the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def fixture() -> np.ndarray:
    i, j = np.arange(20)[:, None], np.arange(5)
    return (i * 7 + j * 3) % 11 + 0.5 * j + 0.1 * i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True)
    ap.add_argument("--data", help="also report this .data file's split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    sys.path.insert(0, os.path.abspath(args.original))
    import jax
    from proba_sandbox.module_sandbox.dataset.base import DataConfig
    from proba_sandbox.module_sandbox.dataset.tabular import TabularLoader

    def load(path):
        cfg = DataConfig(
            path=path, source="local", data_type="tabular", task="regr", target_column=None,
            features=None, datapoint_limit=None, normalize=True, train_split=0.7,
            valid_split=0.1, test_split=0.2,
        )  # fmt: skip
        loader = TabularLoader(config=cfg, rng=jax.random.PRNGKey(args.seed))
        # the key TabularLoader._shuffle draws: the second of the first split of the seed's key
        _, sub = jax.random.split(jax.random.PRNGKey(args.seed))
        return loader, np.asarray(jax.random.permutation(sub, np.arange(len(loader.data))))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fixture.data")
        np.savetxt(path, fixture(), fmt="%.2f", delimiter=" ")
        d, perm = load(path)
        print("PERM =", perm.tolist())
        print("TRAIN_X0 =", np.asarray(d.train_x[0]).tolist())
        print("TRAIN_Y =", np.asarray(d.train_y).tolist())
        print("VALID_X =", np.asarray(d.valid_x).tolist())
        print("VALID_Y =", np.asarray(d.valid_y).tolist())
        print("TEST_Y =", np.asarray(d.test_y).tolist())
    if args.data:
        d, perm = load(os.path.abspath(args.data))
        raw = np.genfromtxt(args.data, delimiter=" ")
        ours = ((raw - raw.mean(0)) / raw.std(0)).astype(np.float32)[perm]
        sizes = len(d.train_y), len(d.valid_y), len(d.test_y)
        print(f"{args.data}: sizes {sizes}, first rows {perm[:5].tolist()}")
        print("max |original - float64 standardised, then float32|:", np.abs(d.data - ours).max())


if __name__ == "__main__":
    main()
