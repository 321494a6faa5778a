"""Koopman losses against hand-computed values, the ordered dataset, ridge, and each model."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.koopman import losses
from trainers.koopman.data import ordered_sequence, ordered_splits
from trainers.koopman.trainer import KoopmanConfig, KoopmanTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit

X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)


def test_spectral_contrastive_loss_by_hand():
    # Gram x_i·y_j: [[2, 0, 1], [0, 1, -1], [2, 1, 0]]; off-diagonal squares: 0+1+0+1+4+1 = 7.
    expected = 7 / (3 * 2) - 2 / 3 * (2 + 1 + 0)
    assert float(losses.spectral_contrastive_loss(X, Y)) == pytest.approx(expected)


def test_vamp2_score_by_hand_and_its_maximum():
    # C_x = XᵀX/3, C_y = YᵀY/3, C_xy = XᵀY/3; VAMP-2 = tr(C_x⁻¹ C_xy C_y⁻¹ C_yx).
    cx, cy, cxy = X.T @ X / 3, Y.T @ Y / 3, X.T @ Y / 3
    expected = torch.trace(torch.linalg.inv(cx) @ cxy @ torch.linalg.inv(cy) @ cxy.T)
    assert float(losses.vamp_score(X, Y, eps=1e-12)) == pytest.approx(float(expected), rel=1e-6)
    # y = x A (invertible A): perfectly predictable, the score reaches its maximum d = 2.
    a = torch.tensor([[2.0, 1.0], [0.5, 3.0]], dtype=torch.float64)
    assert float(losses.vamp_score(X, X @ a, eps=1e-12)) == pytest.approx(2.0, rel=1e-6)
    # VAMP-1 of the same: the nuclear norm of an orthogonal matrix: 2.
    assert float(losses.vamp_score(X, X @ a, p=1, eps=1e-12)) == pytest.approx(2.0, rel=1e-6)


def test_dynamical_ae_loss_by_hand():
    identity = lambda z: z  # noqa: E731
    double = lambda z: 2 * z  # noqa: E731
    # enc = dec = I, K = 2: MSE(x, x) + MSE(y, 2x) + MSE(y, 2x).
    expected = 2 * float(((Y - 2 * X) ** 2).mean())
    assert float(losses.dynamical_ae_loss(X, Y, identity, identity, double)) == pytest.approx(
        expected
    )


def test_ridge_recovers_a_planted_linear_map():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(losses.ridge(x, x @ w, 1e-10), w, atol=1e-6)


def test_ordered_sequence_repeats_the_class_cycle(tmp_path):
    labels = torch.tensor([3, 0, 1, 2, 0, 1, 1, 2, 0, 4, 2])
    images = torch.arange(len(labels)).float()
    x, y = ordered_sequence(images, labels, 3, seed=0)
    assert y.tolist() == [0, 1, 2] * 3
    assert sorted(x.tolist()) == sorted(i for i, lab in enumerate(labels.tolist()) if lab < 3)
    splits = ordered_splits("digits", tmp_path, 5, seed=0)
    for part, (_, labels) in splits.items():
        assert labels.tolist() == [i % 5 for i in range(len(labels))], part
    n = {k: len(v[1]) for k, v in splits.items()}
    assert n["train"] == 3 * n["val"] and n["val"] > 0 and n["test"] >= n["val"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("koopman-data")


@pytest.mark.parametrize(
    "model", ["linear", "classifier_features", "vamp", "spectral_contrastive", "dynamical_ae"]
)
def test_each_model_trains_and_reports_rollout_accuracy(model, data_dir, tmp_path):
    cfg = KoopmanConfig(model=model, rollout_steps=4, oracle_steps=300, latent_dim=8)
    ctx = LocalContext(tmp_path, data_dir=data_dir)
    fit(KoopmanTrainer(cfg), ctx, LoopConfig(eval_every=60), StopRule(iterations=60))
    losses_ = [m["train/loss"] for s, m in ctx.metrics if "train/loss" in m]
    if model not in ("linear", "classifier_features"):
        assert sum(losses_[-10:]) < sum(losses_[:10])  # trained: the loss went down
    final = ctx.metrics[-1][1]
    acc = [final[f"val/rollout_acc_{t:02d}"] for t in range(1, 5)]
    assert all(0 <= a <= 1 for a in acc)
    assert final["val/rollout_acc_mean"] == pytest.approx(sum(acc) / 4)
    assert final["val/eig_abs_1"] >= final["val/eig_abs_2"] >= 0
    assert math.isfinite(final["val/loss"])
    assert {p.name for p, _ in ctx.kept} == {"rollout.png", "eigenvalues.png"}
    if model == "classifier_features":
        assert acc[0] > 0.5  # one step ahead from the oracle's own features: well above 1/5
