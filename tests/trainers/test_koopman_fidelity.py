"""The koopman trainer's losses against kooplearn's formulas, on small fixed inputs.

kooplearn is not a dependency: ``_kooplearn_*`` below re-implement, line by line in numpy,
``kooplearn.torch.nn._functional`` (``vamp_loss``, ``spectral_contrastive_loss``,
``dynamic_ae_loss``), its ``_stats.covariance`` / ``_linalg.sqrtmh`` and the reduced-rank
estimator of ``kooplearn.linear_model.Ridge`` (``_regressors.reduced_rank``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from trainers.koopman import losses
from trainers.koopman.trainer import KoopmanConfig, KoopmanTrainer
from trainers.nets import mlp


def _kooplearn_covariance(x, y=None, center=True):
    norm = np.sqrt(x.shape[0])
    x = x / norm
    if center:
        x = x - x.mean(0, keepdims=True)
    if y is None:
        return x.T @ x
    y = y / norm
    if center:
        y = y - y.mean(0, keepdims=True)
    return x.T @ y


def _kooplearn_sqrtmh(a):
    vals, vecs = np.linalg.eigh(a)
    threshold = vals.max() * len(vals) * np.finfo(vals.dtype).eps
    vals = np.where(vals > threshold, vals, 0.0)
    return (vecs * np.sqrt(vals)) @ vecs.T


def _kooplearn_vamp_loss(x, y, schatten_norm=2, center_covariances=True):
    cx = _kooplearn_covariance(x, center=center_covariances)
    cy = _kooplearn_covariance(y, center=center_covariances)
    cxy = _kooplearn_covariance(x, y, center=center_covariances)
    if schatten_norm == 2:
        m_x = np.linalg.lstsq(cx, cxy, rcond=None)[0]
        m_y = np.linalg.lstsq(cy, cxy.T, rcond=None)[0]
        return -np.trace(m_x @ m_y)
    m = (
        np.linalg.pinv(_kooplearn_sqrtmh(cx), hermitian=True)
        @ cxy
        @ np.linalg.pinv(_kooplearn_sqrtmh(cy), hermitian=True)
    )
    return -np.linalg.norm(m, "nuc")


def _kooplearn_spectral_contrastive_loss(x, y):
    npts, dim = x.shape
    diag = 2 * np.mean(x * y) * dim
    square = (x @ y.T) ** 2
    off_diag = np.mean(np.triu(square, 1) + np.tril(square, -1)) * npts / (npts - 1)
    return off_diag - diag


def _kooplearn_dynamic_ae_loss(x, y, x_rec, y_enc, x_evo, y_pred, a_rec, a_lin, a_pred):
    def mse(a, b):
        return np.mean((a - b) ** 2)

    return a_rec * mse(x, x_rec) + a_lin * mse(y_enc, x_evo) + a_pred * mse(y, y_pred)


def _kooplearn_reduced_rank(x, y, alpha, rank):
    n = len(x)
    cx, cxy = x.T @ x / n, x.T @ y / n
    vals, vecs = scipy.linalg.eigh(cxy @ cxy.T, cx + alpha * np.eye(len(cx)))
    vecs = vecs[:, np.argsort(vals)[::-1][:rank]]
    norms = np.sqrt(np.sum(vecs * ((cx + alpha * np.eye(len(cx))) @ vecs), 0))
    u = vecs / norms
    return u @ u.T @ cxy


def _features(n=40, d=4, scale=0.03, seed=0):
    """Fixed small features: y a noisy linear image of x, at the scale of a trained VAMP
    encoder's output (covariance eigenvalues ~1e-3)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + 0.1
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    y = x @ a + 0.3 * scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("center", [True, False])
def test_vamp_loss_is_kooplearns_without_a_hidden_ridge(p, center):
    x, y = _features()
    ours = float(losses.vamp_loss(x, y, p, center))
    assert ours == pytest.approx(_kooplearn_vamp_loss(x.numpy(), y.numpy(), p, center), rel=1e-8)
    # The former hidden 1e-6 ridge is now the explicit vamp_eps: at this feature scale it
    # lowers the score visibly, and it is (C + εI)⁻¹ exactly.
    eps = 1e-6
    cx, cy, cxy = losses.covariances(x, y, center)
    eye = torch.eye(len(cx), dtype=cx.dtype)
    if p == 2:
        m = torch.linalg.solve(cx + eps * eye, cxy) @ torch.linalg.solve(cy + eps * eye, cxy.T)
        assert float(losses.vamp_score(x, y, 2, center, eps)) == pytest.approx(
            float(torch.trace(m)), rel=1e-8
        )
    assert float(losses.vamp_loss(x, y, p, center, eps)) > ours + 1e-4


def test_spectral_contrastive_and_autoencoder_losses_are_kooplearns():
    x, y = _features(n=12, d=3, scale=1.0)
    assert float(losses.spectral_contrastive_loss(x, y)) == pytest.approx(
        _kooplearn_spectral_contrastive_loss(x.numpy(), y.numpy()), rel=1e-10
    )
    enc, dec = torch.nn.Linear(3, 2).double(), torch.nn.Linear(2, 3).double()
    op = torch.nn.Linear(2, 2, bias=False).double()
    weights = (0.5, 2.0, 3.0)
    with torch.no_grad():
        ours = float(losses.dynamical_ae_loss(x, y, enc, dec, op, weights))
        parts = [x, y, dec(enc(x)), enc(y), op(enc(x)), dec(op(enc(x)))]
    expected = _kooplearn_dynamic_ae_loss(*[t.numpy() for t in parts], *weights)
    assert ours == pytest.approx(expected, rel=1e-10)


def _trainer(model: str, inputs: int = 6, **overrides) -> KoopmanTrainer:
    """A trainer whose networks are set by hand (no data, no oracle): enough for ``loss``."""
    torch.manual_seed(0)
    trainer = KoopmanTrainer(KoopmanConfig(model=model, latent_dim=3, hidden=(8,), **overrides))
    trainer.encoder = mlp([inputs, 8, 3]).double()
    if model == "dynamical_ae":
        trainer.decoder = mlp([3, 8, inputs]).double()
        trainer.latent_op = torch.nn.Linear(3, 3, bias=False).double()
    return trainer


@pytest.mark.parametrize(
    "model, overrides",
    [
        ("vamp", {}),
        ("vamp", {"center": False}),
        ("vamp", {"vamp_p": 1}),
        ("spectral_contrastive", {}),
    ],
)
def test_trainer_loss_is_kooplearns_on_the_encoder_output(model, overrides):
    # Formerly a constant column was appended before the loss: uncentred VAMP then scored
    # "centred + 1" and the spectral contrastive loss was a different objective.
    x, y = _features(n=30, d=6, scale=1.0)
    trainer = _trainer(model, **overrides)
    with torch.no_grad():
        ours = float(trainer.loss(x, y))
        fx, fy = trainer.encoder(x).numpy(), trainer.encoder(y).numpy()
    cfg = trainer.config
    if model == "vamp":
        expected = _kooplearn_vamp_loss(fx, fy, cfg.vamp_p, cfg.center)
    else:
        expected = _kooplearn_spectral_contrastive_loss(fx, fy)
    assert ours == pytest.approx(expected, rel=1e-7)


def test_constant_feature_option_gives_deeptimes_convention():
    x, y = _features(n=30, d=6, scale=1.0)
    plain, const = _trainer("vamp"), _trainer("vamp", constant_feature=True)
    with torch.no_grad():
        fx, fy = plain.encoder(x).numpy(), plain.encoder(y).numpy()
        centred = _kooplearn_vamp_loss(fx, fy, 2, True)
        # centred VAMP: the constant drops out
        assert float(const.loss(x, y)) == pytest.approx(centred, rel=1e-6)
        # uncentred VAMP-2 of [φ, 1]: the constant function's singular value 1 is counted
        uncentred = _trainer("vamp", center=False, constant_feature=True)
        assert float(uncentred.loss(x, y)) == pytest.approx(centred - 1, rel=1e-6)
        sc = _trainer("spectral_contrastive", constant_feature=True)
        ones = np.ones((len(fx), 1))
        gx, gy = np.hstack([fx, ones]), np.hstack([fy, ones])
        expected = _kooplearn_spectral_contrastive_loss(gx, gy)
        assert float(sc.loss(x, y)) == pytest.approx(expected, rel=1e-7)
        assert expected != pytest.approx(_kooplearn_spectral_contrastive_loss(fx, fy), rel=1e-3)


def test_trainer_autoencoder_loss_takes_kooplearns_weights():
    x, y = _features(n=20, d=6, scale=1.0)
    weights = (0.25, 4.0, 2.0)
    trainer = _trainer("dynamical_ae", ae_weights=weights)
    enc, dec, op = trainer.encoder, trainer.decoder, trainer.latent_op
    with torch.no_grad():
        parts = [x, y, dec(enc(x)), enc(y), op(enc(x)), dec(op(enc(x)))]
        ours = float(trainer.loss(x, y))
    assert ours == pytest.approx(
        _kooplearn_dynamic_ae_loss(*[t.numpy() for t in parts], *weights), rel=1e-10
    )
    assert KoopmanConfig().ae_weights == (1.0, 1.0, 1.0)  # kooplearn's AutoEncoderLoss


def test_reduced_rank_operator_is_kooplearns_estimator():
    x, y = _features(n=50, d=5, scale=1.0)
    ours = losses.reduced_rank_ridge(x, y, 1e-6, 2)
    expected = _kooplearn_reduced_rank(x.numpy(), y.numpy(), 1e-6, 2)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-10)
    assert torch.linalg.matrix_rank(ours) == 2


def test_default_ridge_keeps_a_small_scale_cycle_on_the_unit_circle():
    # One-hot class features at a trained VAMP encoder's scale (0.03) of a 5-cycle: the
    # former default ridge 1e-3 shrank the operator's eigenvalues to ~0.5, so rollouts
    # decayed to the mean image; kooplearn's 1e-6 keeps them at 1.
    labels = torch.arange(500) % 5
    phi = 0.03 * torch.nn.functional.one_hot(labels, 5).double()
    default = losses.ridge(phi[:-1], phi[1:], KoopmanConfig().ridge)
    assert torch.linalg.eigvals(default).abs().min() > 0.99
    assert torch.linalg.eigvals(losses.ridge(phi[:-1], phi[1:], 1e-3)).abs().max() < 0.9
