"""The koopman trainer's options that reproduce kooplearn's ordered-MNIST example, on generated
data: the interleaved order and the notebook's split sizes, its CNN encoder with L2-normalised
features and the lagged linear head, its oracle, its reduced-rank ``Ridge`` and the way it
predicts images, the scaler of its linear model, and the config errors.

kooplearn is not a dependency: ``_kooplearn_*`` re-implement, in numpy, its
``datasets.fetch_ordered_mnist`` interleaving and ``linear_model.Ridge`` (``reduced_rank`` with
``eigen_solver='dense'``, ``stable_topk``, ``weighted_norm``, ``_regressors.predict``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from pydantic import ValidationError

from dynsweep.errors import DataError
from trainers.koopman import losses
from trainers.koopman.data import interleaved_sequence, ordered_splits
from trainers.koopman.models import CNNEncoder, FeatureMap, kooplearn_ridge_basis, train_oracle
from trainers.koopman.trainer import KoopmanConfig, KoopmanTrainer
from trainers.local import LocalContext


def _write_idx(folder, stem, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes (magic 0x08, ndim)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    (folder / stem).write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_test_dir(tmp_path_factory):
    """MNIST-format test files (16×16 to keep the test fast), labels 0..6 in a fixed shuffled
    order; each image is a bright bar whose height encodes its class (classes separable)."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(7), [14, 12, 13, 12, 15, 9, 9]))
    images = rng.integers(0, 40, size=(len(labels), 16, 16))
    for i, k in enumerate(labels):
        images[i, 2 * k : 2 * k + 3, 2:14] = 250
    folder = tmp_path_factory.mktemp("mnist")
    _write_idx(folder, "t10k-images-idx3-ubyte", images)
    _write_idx(folder, "t10k-labels-idx1-ubyte", labels)
    return folder, labels


@pytest.fixture(scope="module")
def oracle_cache(tmp_path_factory):
    """One cache for the module: the oracle is trained once for all the trainer tests."""
    return tmp_path_factory.mktemp("cache")


def _kooplearn_interleave(labels: np.ndarray, classes: int) -> np.ndarray:
    indices = {d: np.flatnonzero(labels == d) for d in range(classes)}
    n_min = min(len(indices[d]) for d in range(classes))
    ordered = np.empty(n_min * classes, dtype=int)
    for start, cls in enumerate(range(classes)):
        ordered[start::classes] = indices[cls][:n_min]
    return ordered


def test_interleaved_order_is_kooplearns_and_sizes_are_the_notebooks(mnist_test_dir):
    folder, labels = mnist_test_dir
    images = torch.arange(len(labels)).float()
    x, y = interleaved_sequence(images, torch.from_numpy(labels), 5)
    assert x.long().tolist() == _kooplearn_interleave(labels, 5).tolist()
    assert y.tolist() == [0, 1, 2, 3, 4] * 12  # 12 = the rarest class among 0..4
    # the notebook's np.split(np.arange(5000), [3000, 4000]), scaled to 60 images
    kw = {"split": "test", "order": "interleaved"}
    splits = ordered_splits("mnist", folder, 5, 0, sizes=(30, 15, 15), **kw)
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 30, "val": 15, "test": 15}
    order = _kooplearn_interleave(labels, 5)
    all_images = torch.cat([splits[p][0] for p in ("train", "val", "test")])
    expected = torch.from_numpy(order)  # images are in the file's order: compare pixels
    from trainers.idx import load_split

    file_images, _ = load_split("mnist", folder, "test", download=False)
    assert torch.equal(all_images, file_images[expected])
    with pytest.raises(DataError, match=r"sizes: \[30, 20, 15\] asks for 65 images.*has 60"):
        ordered_splits("mnist", folder, 5, 0, sizes=(30, 20, 15), **kw)


def test_split_test_needs_an_idx_dataset_and_sizes_are_checked(tmp_path):
    with pytest.raises(DataError, match="split: 'test'.*'digits'"):
        ordered_splits("digits", tmp_path, 5, 0, split="test")
    with pytest.raises(ValidationError, match="sizes"):
        KoopmanConfig(sizes=(3000, 1, 1000))


def test_cnn_feature_map_is_l2_normalised_with_a_lagged_head_only_on_request():
    torch.manual_seed(0)
    net = FeatureMap(CNNEncoder(5), 5, normalize=True, head=True)
    x = torch.rand(7, 1, 28, 28)
    z, lagged = net(x), net(x, lagged=True)
    assert z.shape == (7, 5) and lagged.shape == (7, 5)
    assert torch.allclose(z.norm(dim=1), torch.ones(7), atol=1e-6)
    assert torch.allclose(lagged, z @ net.head.weight.T)
    assert net.head.bias is None
    assert CNNEncoder(5)(x[:, 0]).shape == (7, 5)  # N×28×28 gets its channel, as kooplearn's
    n_params = sum(p.numel() for p in CNNEncoder(5).parameters())
    assert n_params == (16 * 25 + 16) + (32 * 16 * 25 + 32) + (32 * 7 * 7 * 5 + 5)


def _kooplearn_ridge_u(x, y, alpha, rank):
    """kooplearn's Ridge(reduced_rank=True, eigen_solver='dense') fit: U."""
    n = x.shape[0]
    c_x, c_xy = (x / np.sqrt(n)).T @ (x / np.sqrt(n)), (x / np.sqrt(n)).T @ (y / np.sqrt(n))
    c_x = c_x + alpha * np.eye(len(c_x))
    values, vectors = scipy.linalg.eigh(c_xy @ c_xy.T, c_x)
    top = np.argsort(values)[::-1][:rank]  # stable_topk: drop values ≤ 10·d·ε
    top = top[values[top] > 10.0 * values.shape[0] * np.finfo(values.dtype).eps]
    vectors = vectors[:, top]
    a = c_x @ vectors
    norms = np.sqrt(np.real(np.sum(0.5 * (vectors * a + vectors * a), axis=0)))
    return vectors @ np.diag(norms**-1.0)


def _kooplearn_predict(u, c_xy, phi_in, phi_x, obs_y, n_steps):
    m = np.linalg.matrix_power(u.T @ c_xy @ u, n_steps - 1)
    return np.linalg.multi_dot([phi_in @ u, m, u.T @ phi_x.T @ obs_y / len(phi_x)])


def test_kooplearn_ridge_basis_and_predictions_match_kooplearns_formula():
    rng = np.random.default_rng(3)
    traj = np.cumsum(rng.normal(size=(40, 4)), axis=0) * 0.1 + rng.normal(size=(40, 4))
    traj[:, 3] = 0.0  # a dead feature, as the example's autoencoder latents (rank 5 → 4)
    x, y = traj[:-1], traj[1:]
    u = kooplearn_ridge_basis(x, y, 1e-6, 4)
    expected = _kooplearn_ridge_u(x, y, 1e-6, 4)
    assert u.shape == expected.shape == (4, 3)  # the null direction is dropped
    k = u @ u.T @ (x.T @ y / len(x))
    np.testing.assert_allclose(k, expected @ expected.T @ (x.T @ y / len(x)), rtol=1e-8)
    # ... and equals the Cholesky form of the reduced-rank estimator on the same data
    ref = losses.reduced_rank_ridge(torch.from_numpy(x), torch.from_numpy(y), 1e-6, 3)
    np.testing.assert_allclose(k, ref.numpy(), rtol=1e-6, atol=1e-12)
    # n-step observable prediction: φ K^{n-1} W with W = U Uᵀ Φ_Xᵀ g(Y) / N
    obs = rng.normal(size=(40, 6))
    w = u @ u.T @ x.T @ obs[1:] / len(x)
    phi_in = rng.normal(size=(5, 4))
    for n in (1, 3):
        ours = phi_in @ np.linalg.matrix_power(k, n - 1) @ w
        ref_n = _kooplearn_predict(expected, x.T @ y / len(x), phi_in, x, obs[1:], n)
        np.testing.assert_allclose(ours, ref_n, rtol=1e-7, atol=1e-12)


REPRO = {
    "dataset": "mnist",
    "split": "test",
    "order": "interleaved",
    "sizes": (30, 15, 15),
    "classes": 5,
    "architecture": "cnn",
    "latent_dim": 5,
    "normalize": True,
    "lagged_head": True,
    "center": False,
    "rank": None,
    "estimator": "kooplearn",
    "operator_rank": 5,
    "oracle": "kooplearn",
    "latent_op_init": "default",
    "rollout": "reencode",
    "clamp": False,
    "optimizer": "adamw",
    "lr": 2e-3,
    "batch_size": 8,
    "sampling": "epochs",
    "rollout_steps": 3,
}


def test_oracle_learns_the_classes(mnist_test_dir):
    folder, labels = mnist_test_dir
    splits = ordered_splits("mnist", folder, 5, 0, "test", "interleaved", (30, 15, 15))
    (x, y), (xv, yv) = splits["train"], splits["val"]
    model = train_oracle(x, y, 5, epochs=8, batch_size=8)
    assert not model.training
    with torch.no_grad():
        assert float((model(xv).argmax(1) == yv).float().mean()) > 0.9


@pytest.mark.parametrize("model", ["linear", "vamp", "dynamical_ae"])
def test_repro_options_train_and_evaluate(
    model, mnist_test_dir, oracle_cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("DYNSWEEP_CACHE", str(oracle_cache))
    folder, _ = mnist_test_dir
    trainer = KoopmanTrainer(KoopmanConfig(model=model, **REPRO))
    trainer.setup(LocalContext(tmp_path / "run", seed=0, data_dir=folder))
    assert any((oracle_cache / "oracles").iterdir()) and not (folder / "oracles").exists()
    if model == "vamp":  # seeded just before the networks are built, as kooplearn's notebook
        torch.manual_seed(0)
        backbone, head = CNNEncoder(5, 1, 16), torch.nn.Linear(5, 5, bias=False)
        params = list(backbone.parameters()) + [head.weight]
        assert all(torch.equal(a, b) for a, b in zip(trainer.modules.parameters(), params))
    if model != "linear":
        assert trainer.steps_per_epoch == 4  # 29 pairs in batches of 8, the last short
        seen = torch.cat([trainer.batches.next() for _ in range(4)])
        assert sorted(seen.tolist()) == list(range(29))
        assert isinstance(trainer.optimizer, torch.optim.AdamW)
        assert np.isfinite(trainer.step()["train/loss"])
    metrics = trainer.evaluate()
    assert 0.9 <= metrics["val/oracle_acc"] <= 1.0
    assert all(0.0 <= metrics[f"val/rollout_acc_{t:02d}"] <= 1.0 for t in (1, 2, 3))
    assert trainer.K.shape == ((256, 256) if model == "linear" else (5, 5))
    assert trainer.operator_rank <= 5
    if model == "linear":  # kooplearn's pipeline: scikit-learn's StandardScaler
        from sklearn.preprocessing import StandardScaler

        flat = trainer.data["train"][0].flatten(1).double().numpy()
        scaler = StandardScaler().fit(flat)
        np.testing.assert_allclose(trainer.mean.numpy(), scaler.mean_, atol=1e-6)
        np.testing.assert_allclose(trainer.std.numpy(), scaler.scale_, rtol=1e-5)
    if model == "vamp":  # the loss: uncentred VAMP-2 of (φ(x), head(φ(y))), φ L2-normalised
        x = trainer.data["val"][0]
        with torch.no_grad():
            fx = torch.nn.functional.normalize(trainer.encoder(x[:-1]), dim=-1)
            fy = trainer.head(torch.nn.functional.normalize(trainer.encoder(x[1:]), dim=-1))
            expected = losses.vamp_loss(fx, fy, 2, center=False)
            assert float(trainer.loss(x[:-1], x[1:])) == pytest.approx(float(expected), rel=1e-5)
