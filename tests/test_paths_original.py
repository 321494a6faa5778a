"""The harness around the original paths code: its data split (no JAX needed here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reproductions.paths_original import make_split
from reproductions.paths_original.run_original import dynsweep_split

# The original's TabularLoader (normalize=True, 0.7 / 0.1 / 0.2, jax.random.PRNGKey(0)) on the
# synthetic file of _fixture(), from
#   PYTHON_OF_ORIGINAL reproductions/paths_original/reference_split.py --original DIR
# (jax 0.4.30 CPU; PERM is the permutation its _shuffle drew).
PERM = [8, 19, 6, 16, 12, 11, 0, 3, 4, 2, 9, 5, 7, 1, 13, 10, 17, 18, 15, 14]
TRAIN_X0 = [-1.229958176612854, -0.41708242893218994, 0.6416652798652649, 1.442543387413025]
TRAIN_Y = [
    -0.9004747867584229, -0.5647045373916626, 1.4804418087005615, -0.3510325849056244,
    1.0530976057052612, -1.1141468286514282, -1.4499170780181885, -1.6635890007019043,
    0.5036553144454956, -0.4731309115886688, 1.266769528388977, -0.686802864074707,
    0.2899833619594574, 0.7173275351524353,
]  # fmt: skip
VALID_X = [-0.47072461247444153, 0.3849993348121643, 1.4437469244003296, -1.1388500928878784]
VALID_Y = [-0.13736051321029663]
TEST_Y = [
    0.07631142437458038, 1.8162119388580322, 0.6257537603378296, 0.8394256830215454,
    -1.327818751335144,
]  # fmt: skip


def _fixture(tmp_path, rows: int = 20, name: str = "fixture"):
    i, j = np.arange(rows)[:, None], np.arange(5)
    path = tmp_path / f"{name}.data"
    np.savetxt(path, (i * 7 + j * 3) % 11 + 0.5 * j + 0.1 * i, fmt="%.2f", delimiter=" ")
    return str(path)


def test_the_split_equals_the_original_loaders_for_its_permutation(tmp_path):
    x, y, xv, yv, xt, yt = dynsweep_split(_fixture(tmp_path), np.array(PERM))
    assert (x.shape, xv.shape, xt.shape) == ((14, 4), (1, 4), (5, 4))
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_allclose(x[0], TRAIN_X0, atol=1e-6)
    np.testing.assert_allclose(y, TRAIN_Y, atol=1e-6)
    np.testing.assert_allclose(xv[0], VALID_X, atol=1e-6)
    np.testing.assert_allclose(yv, VALID_Y, atol=1e-6)
    np.testing.assert_allclose(yt, TEST_Y, atol=1e-6)


def test_the_split_cuts_with_int_as_the_original(tmp_path):
    # int(768 * 0.7) = 537, int(768 * (0.7 + 0.1)) = 614 (0.7 + 0.1 < 0.8): 537 / 77 / 154
    split = dynsweep_split(_fixture(tmp_path, 768), np.arange(768))
    assert [len(a) for a in split[1::2]] == [537, 77, 154]


def test_the_permutation_file_is_torchs_randperm_for_the_seed(tmp_path):
    order = make_split.permutation(50, 3)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3)).numpy()
    assert np.array_equal(order, expected)
    assert not np.array_equal(order, make_split.permutation(50, 4))
    shuffled = np.concatenate(dynsweep_split(_fixture(tmp_path, 50), order)[::2])
    unshuffled = np.concatenate(dynsweep_split(_fixture(tmp_path, 50), np.arange(50))[::2])
    np.testing.assert_array_equal(shuffled, unshuffled[order])


def test_a_split_file_that_is_no_permutation_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--split: not a permutation of the 20 rows"):
        dynsweep_split(_fixture(tmp_path), np.array(PERM[:-1] + [8]))
    with pytest.raises(SystemExit, match="--split"):
        dynsweep_split(_fixture(tmp_path), np.arange(19))


def test_the_split_equals_dynsweeps_uci_loader(tmp_path):
    data = pytest.importorskip("trainers.paths.data")
    if not hasattr(data, "uci"):
        pytest.skip("trainers.paths.data.uci (the original's UCI procedure) not in this tree")
    path = _fixture(tmp_path, 40, "toy")
    ours = dynsweep_split(path, make_split.permutation(40, 0))
    theirs = data.uci("toy", seed=0, folder=tmp_path)
    for got, (name, i) in zip(ours, [(n, i) for n in ("train", "val", "test") for i in (0, 1)]):
        np.testing.assert_allclose(got.reshape(-1), theirs[name][i].numpy().reshape(-1), atol=1e-6)
