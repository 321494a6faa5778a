"""The diffusion trainer: forward maps, training, sampling modes and the ELBO."""

from __future__ import annotations

import math

import pytest
import torch

from dynsweep.errors import TrialFailure
from trainers.diffusion.forward import (
    FORWARD_PROCESSES,
    ForwardConfig,
    Heat,
    build_forward,
    dct_matrix,
)
from trainers.diffusion.trainer import DiffusionConfig, DiffusionTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit

SHAPE = (1, 8, 8)
TINY = {
    "forward": {"K": 10},
    "model": {
        "channels": 16,
        "num_res_blocks": 1,
        "mult": [1, 2],
        "attention_levels": [1],
        "dropout": 0.0,
    },
    "optimizer": {"lr": 1e-3, "warmup": 5, "ema": 0.9},
    "samples": 0,
}


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=sorted(FORWARD_PROCESSES))
def process(request):
    return build_forward(ForwardConfig(name=request.param, K=5, max_condition=1e12), SHAPE)


def test_every_map_keeps_shape_is_identity_at_zero_and_deterministic(process):
    x = images()
    for k in range(process.K + 1):
        ks = torch.full((len(x),), k)
        u = process(x, ks)
        assert u.shape == x.shape and torch.isfinite(u).all()
        assert torch.equal(u, process(x, ks))
    assert torch.allclose(process(x, torch.zeros(len(x), dtype=torch.long)), x, atol=1e-5)


def test_every_map_but_identity_moves_images_away_from_the_data(process):
    x = images()
    far = process(x, torch.full((len(x),), process.K))
    if process.name == "identity":
        assert torch.equal(far, x)
    else:
        assert (far - x).norm() > 0.1 * x.norm()


def test_dct_round_trip_is_exact():
    d = dct_matrix(8)
    x = torch.randn(8, 8, dtype=torch.float64)
    assert torch.allclose(d.T @ (d @ x @ d.T) @ d, x, atol=1e-12)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)


def test_heat_blur_composes_like_the_heat_equation():
    heat = Heat(ForwardConfig(K=10), SHAPE)
    x = images(3)
    s1, s2 = torch.full((3,), 0.7), torch.full((3,), 1.3)
    twice = heat.blur(heat.blur(x, s1), s2)
    once = heat.blur(x, torch.sqrt(s1**2 + s2**2))
    assert torch.allclose(twice, once, atol=1e-5)
    # Blurring keeps the mean (the DC coefficient) and lowers the variance.
    assert torch.allclose(once.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    assert (once.var((1, 2, 3)) < x.var((1, 2, 3))).all()


def test_heat_levels_follow_the_log_spaced_schedule():
    heat = Heat(ForwardConfig(K=4, sigma_min=0.5, sigma_max=20), SHAPE)
    expected = [0.0, 0.5, 0.5 * 40 ** (1 / 3), 0.5 * 40 ** (2 / 3), 20.0]
    assert heat.sigmas.tolist() == pytest.approx(expected, rel=1e-5)


def test_random_product_fails_with_a_clear_reason_instead_of_training_on_nans():
    with pytest.raises(TrialFailure, match="random_product is numerically unstable.*condition"):
        build_forward(ForwardConfig(name="random_product", K=100), SHAPE)


def test_a_tiny_training_run_lowers_the_loss(tmp_path):
    trainer = DiffusionTrainer(DiffusionConfig.model_validate(TINY))
    ctx = LocalContext(tmp_path)
    fit(trainer, ctx, LoopConfig(eval_every=40), StopRule(iterations=80))
    losses = [m["train/loss"] for _, m in ctx.metrics if "train/loss" in m]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    vals = [m["val/loss"] for _, m in ctx.metrics if "val/loss" in m]
    assert vals[-1] < vals[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    trainer = DiffusionTrainer(DiffusionConfig.model_validate(TINY))
    trainer.setup(LocalContext(tmp_path_factory.mktemp("diffusion")))
    for _ in range(20):
        trainer.step()
    return trainer


def test_sampling_modes_have_their_defining_property(trained):
    n = 5
    same = trained.sample(n, "same_init", seed=1)
    assert torch.equal(same.start, same.start[:1].expand_as(same.start))
    assert not torch.equal(same.noise[:, 0], same.noise[:, 1])
    assert not torch.equal(same.images[0], same.images[1])

    shared = trained.sample(n, "share_noise", seed=1)
    assert torch.equal(shared.noise, shared.noise[:, :1].expand_as(shared.noise))
    assert not torch.equal(shared.start[0], shared.start[1])

    rand = trained.sample(n, "random", seed=1)
    assert not torch.equal(rand.start[0], rand.start[1])
    assert not torch.equal(rand.noise[:, 0], rand.noise[:, 1])

    inter = trained.sample(n, "interpolate", seed=1)
    mid = inter.start[0] + 0.5 * (inter.start[-1] - inter.start[0])
    assert torch.allclose(inter.start[2], mid, atol=1e-6)  # linear in u_K
    # Noise mixed on the circle keeps its scale: cos² + sin² = 1.
    norms = inter.noise.flatten(2).norm(dim=2).mean(0)
    assert norms.min() > 0.8 * norms.max()
    assert all(s.images.shape == (n, *SHAPE) for s in (same, shared, rand, inter))
    assert torch.equal(
        trained.sample(n, "random", seed=3).images, trained.sample(n, "random", seed=3).images
    )


def test_elbo_terms_are_finite_and_tied_to_the_training_loss(trained):
    cfg = trained.config
    x = trained.val_x[:64]
    terms = trained.elbo(x, seed=0)
    values = [terms.prior, terms.data, *terms.levels]
    assert all(math.isfinite(v) for v in values)
    assert len(terms.levels) == cfg.forward.K - 1 and len(terms.mse) == cfg.forward.K
    assert terms.bits_per_dim == pytest.approx(terms.total / (64 * math.log(2)))
    # The level terms' squared errors are the training loss at each k (its expectation over k).
    gen = torch.Generator().manual_seed(1)
    losses = []
    with torch.no_grad():
        for k in range(1, cfg.forward.K + 1):
            ks = torch.full((len(x),), k)
            losses.append(
                float(trained.loss(trained.ema, x, ks, torch.randn(x.shape, generator=gen)))
            )
    assert sum(terms.mse) / len(terms.mse) == pytest.approx(sum(losses) / len(losses), rel=0.05)


def test_untrained_identity_model_has_the_analytic_level_error(tmp_path):
    # T(k) = I and f = 0 (zero-initialised output): μ(u_k) = x + σε, so ‖x − μ‖² ≈ σ² D.
    cfg = DiffusionConfig.model_validate({**TINY, "forward": {"name": "identity", "K": 4}})
    trainer = DiffusionTrainer(cfg)
    trainer.setup(LocalContext(tmp_path))
    x = trainer.val_x[:200]
    terms = trainer.elbo(x, seed=0)
    assert terms.mse == pytest.approx([cfg.sigma**2 * 64] * 4, rel=0.1)


def test_attention_level_outside_the_unet_is_refused():
    with pytest.raises(ValueError, match="attention_levels"):
        DiffusionConfig.model_validate({"model": {"mult": [1, 2], "attention_levels": [2]}})
