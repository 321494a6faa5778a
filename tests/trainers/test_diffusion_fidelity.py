"""The diffusion trainer against the original code (issue #18, items 10–12).

References re-implement the original's formulas: AaltoML/generative-inverse-heat-dissipation
(``model_code/utils.py`` ``KL``/``L_K_upperbound``, ``scripts/sampling.py``,
``model_code/ema.py``, ``model_code/unet.py`` ``Upsample``) and the README of
rsn870/linear-models-diffusion (the constant-velocity / constant-deceleration formulas).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.diffusion.elbo import elbo, prior_kl_bound
from trainers.diffusion.forward import ForwardConfig, build_forward
from trainers.diffusion.sampling import sample
from trainers.diffusion.trainer import DiffusionConfig, DiffusionTrainer, load_exported
from trainers.diffusion.unet import UNet, UNetConfig, Upsample
from trainers.local import LocalContext

SIGMA, DELTA = 0.01, 0.0125
SHAPE = (1, 4, 4)
TINY = {
    "forward": {"K": 4},
    "model": {"channels": 8, "num_res_blocks": 1, "mult": [1, 2], "attention_levels": []},
    "optimizer": {"lr": 1e-3, "warmup": 1, "ema": 0.999},
    "samples": 0,
}


def zero_model(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(u)


def identity(K: int = 3):
    return build_forward(ForwardConfig(name="identity", K=K), SHAPE)


def original_L_K_upperbound(test: np.ndarray, train: np.ndarray, sigma_inf, sigma_prior):
    """``L_K_upperbound`` of the original for one test batch, blur = identity (per image)."""
    dim = test.shape[-1]

    def KL(dists, sigma0, sigma1, dim):
        return 0.5 * (
            (sigma0**2 / sigma1**2) * dim
            + dists**2 / sigma1**2
            - dim
            + 2 * dim * np.log(sigma1 / sigma0)
        )

    dists = np.sqrt(((train[:, None, :] - test[None, :, :]) ** 2).sum(-1))  # train × test
    kl_divs = KL(dists, sigma_inf, sigma_prior, dim)
    inference_entropy = dim * 0.5 * np.log(2 * np.pi * np.exp(1) * sigma_inf**2)
    cross_entropies = kl_divs + inference_entropy
    top = (-kl_divs).max(0)
    log_phi = -kl_divs - (top + np.log(np.exp(-kl_divs - top).sum(0)))[None, :]
    phi = np.exp(log_phi)
    return -inference_entropy + (phi * (cross_entropies + log_phi + np.log(len(train)))).sum(0)


def test_prior_upper_bound_matches_the_originals_L_K_upperbound():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(*SHAPE, generator=gen)
    # Centres ~δ apart, so the mixture weights φ are spread, not one-hot.
    train = base + 0.01 * torch.randn(7, *SHAPE, generator=gen, dtype=torch.float64)
    x = base + 0.01 * torch.randn(5, *SHAPE, generator=gen, dtype=torch.float64)
    flat_x, flat_train = x.reshape(5, -1).numpy(), train.reshape(7, -1).numpy()
    ref = original_L_K_upperbound(flat_x, flat_train, sigma_inf=0.01, sigma_prior=0.0125)
    assert ref.std() > 0.1 and (ref > 0).all()
    bound = prior_kl_bound(x, train, SIGMA, DELTA)
    assert bound.numpy() == pytest.approx(ref, rel=1e-9, abs=1e-9)
    terms = elbo(zero_model, identity(), x.float(), train.float(), SIGMA, DELTA)
    assert terms.prior == pytest.approx(ref.mean(), rel=1e-4)


def test_prior_mixture_has_width_delta():
    # One centre, equal to the image: L_K = KL(N(x, σ²) ‖ N(x, δ²)), nonzero because σ ≠ δ.
    # With the mixture at width σ (the old behaviour) the Monte Carlo term was exactly 0.
    d = math.prod(SHAPE)
    exact = d / 2 * (SIGMA**2 / DELTA**2 - 1 + math.log(DELTA**2 / SIGMA**2))
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    mc = elbo(zero_model, identity(1), x.expand(4000, *SHAPE), x, SIGMA, DELTA, gen, "monte_carlo")
    assert mc.prior == pytest.approx(exact, abs=0.1)
    bound = elbo(zero_model, identity(1), x, x, SIGMA, DELTA, prior="upper_bound")
    assert bound.prior == pytest.approx(exact, rel=1e-9)


def test_monte_carlo_prior_is_below_the_upper_bound_on_average():
    gen = torch.Generator().manual_seed(3)
    train = torch.rand(1, *SHAPE, generator=gen) + 0.01 * torch.randn(6, *SHAPE, generator=gen)
    x = train[:1] + 0.01 * torch.randn(1, *SHAPE, generator=gen)
    many = x.expand(4000, *SHAPE)
    mc = elbo(zero_model, identity(1), many, train, SIGMA, DELTA, gen, "monte_carlo").prior
    bound = elbo(zero_model, identity(1), x, train, SIGMA, DELTA).prior
    assert bound - 1.0 < mc < bound  # the bound is tight for a few well-spread centres


def test_unknown_prior_term_is_refused():
    with pytest.raises(ValueError, match="prior"):
        x = torch.rand(2, *SHAPE)
        elbo(zero_model, identity(), x, x, SIGMA, DELTA, prior="monte_carl")


def test_sampler_returns_the_last_mean_as_the_original():
    K, delta = 4, 0.1

    def model(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return -0.05 * k.reshape(-1, 1, 1, 1) * u + 0.01

    data = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(4))
    out = sample(model, identity(K), data, 3, delta, generator=torch.Generator().manual_seed(5))
    # The original's get_sampling_fn_inverse_heat with these u_K and noises.
    u = out.start
    for i, k in enumerate(range(K, 0, -1)):
        u_mean = model(u, torch.full((3,), k)) + u
        u = u_mean + out.noise[i] * delta
    assert torch.allclose(out.images, u_mean, atol=1e-6)
    gen = torch.Generator().manual_seed(5)
    noisy = sample(model, identity(K), data, 3, delta, generator=gen, final_noise=True)
    assert torch.allclose(noisy.images, u_mean + delta * out.noise[-1], atol=1e-6)


def _trainer(tmp_path, **optimizer) -> DiffusionTrainer:
    cfg = {**TINY, "optimizer": {**TINY["optimizer"], **optimizer}}
    trainer = DiffusionTrainer(DiffusionConfig.model_validate(cfg))
    trainer.setup(LocalContext(tmp_path))
    return trainer


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().float().clone() for p in module.parameters()]


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_follows_the_originals_warmup(tmp_path, warmup):
    trainer = _trainer(tmp_path, ema_warmup=warmup)
    shadow = _weights(trainer.engine.module)
    for n in range(1, 4):  # the original's ExponentialMovingAverage.update, num_updates = n
        trainer.step()
        decay = min(0.999, (1 + n) / (10 + n)) if warmup else 0.999
        for s, p in zip(shadow, _weights(trainer.engine.module)):
            s.sub_((1 - decay) * (s - p))
    for s, e in zip(shadow, _weights(trainer.ema)):
        assert torch.allclose(s, e, atol=1e-6)


def test_unet_has_a_conv_after_each_upsample_as_the_original():
    cfg = UNetConfig(channels=8, mult=(1, 2, 2), num_res_blocks=1, attention_levels=())
    net = UNet(cfg, 1)
    ups = [m for m in net.up if isinstance(m, Upsample)]
    assert len(ups) == 2
    assert all(isinstance(m.conv, torch.nn.Conv2d) and m.conv.kernel_size == (3, 3) for m in ups)
    u = torch.rand(2, 1, 28, 28)  # 28 → 14 → 7 and back
    assert net(u, torch.tensor([1, 5])).shape == u.shape
    old = UNet(cfg.model_copy(update={"upsample_conv": False}), 1)
    conv_keys = {k for k in net.state_dict() if ".conv." in k and k.startswith("up.")}
    assert len(conv_keys) == 4  # weight and bias of two convs
    assert set(net.state_dict()) - conv_keys == set(old.state_dict())


def test_models_exported_before_the_upsample_conv_still_load(tmp_path):
    cfg = DiffusionConfig.model_validate(
        {**TINY, "model": {**TINY["model"], "upsample_conv": False}}
    )
    trainer = DiffusionTrainer(cfg)
    trainer.setup(LocalContext(tmp_path / "a"))
    config = cfg.model_dump(mode="json")
    del config["model"]["upsample_conv"]  # a config written before the field existed
    checkpoint = {"trainer": "diffusion", "config": config, "seed": 0, "state": trainer.export()}
    loaded = load_exported(checkpoint, tmp_path / "data", tmp_path / "b")
    assert loaded.config.model.upsample_conv is False
    for a, b in zip(_weights(trainer.ema), _weights(loaded.ema)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["constant_velocity", "constant_deceleration"])
def test_linear_maps_follow_the_forks_readme_formulas(name):
    # README formula 4, u_t = u_0 − (b t/K) u_0 (b = 1), and formula 5,
    # u_t = u_0 − (b t/K) u_0 + (b t²/(2K²)) u_0 with b = 2: the one b that comes to rest at 0.
    K = 8
    t = torch.arange(K + 1, dtype=torch.float64)
    if name == "constant_velocity":
        scale = 1 - t / K
    else:
        b = 2.0
        scale = 1 - b * t / K + b * t**2 / (2 * K**2)
        velocity_at_K = -b / K + b * K / K**2
        assert velocity_at_K == 0 and scale[-1] == 0
    process = build_forward(ForwardConfig(name=name, K=K), SHAPE)
    x = torch.rand(K + 1, *SHAPE, generator=torch.Generator().manual_seed(6))
    expected = scale.float().reshape(-1, 1, 1, 1) * x
    assert torch.allclose(process(x, t.long()), expected, atol=1e-6)


@pytest.mark.parametrize("levels, expected", [("below_K", {1, 2, 3}), ("all", {1, 2, 3, 4})])
def test_training_draws_the_originals_levels(tmp_path, levels, expected):
    """The original's loss draws k = randint(1, K), so 1..K−1 (K = 4 here); ``all`` is 1..K."""
    trainer = DiffusionTrainer(DiffusionConfig.model_validate({**TINY, "train_levels": levels}))
    trainer.setup(LocalContext(tmp_path))
    drawn = trainer.draw_levels(10_000, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == expected
    assert set(trainer.eval_k.tolist()) <= expected
    seen: list[int] = []
    loss = trainer.loss

    def recording(model, x, k, eps):
        seen.extend(k.tolist())
        return loss(model, x, k, eps)

    trainer.loss = recording
    for _ in range(2):  # 2 batches of 64: every level appears
        trainer.step()
    assert set(seen) == expected


def test_below_K_needs_two_levels():
    with pytest.raises(ValueError, match="train_levels"):
        DiffusionConfig.model_validate({**TINY, "forward": {"K": 1}})
    assert DiffusionConfig.model_validate({**TINY, "forward": {"K": 1}, "train_levels": "all"})


def test_sampling_starts_from_level_K():
    """As the original's sampler: u_K = T(K) x (+ δ ε here), then f(·, k) for k = K..1."""
    K, delta = 4, 0.01
    forward = build_forward(ForwardConfig(name="constant_velocity", K=K), SHAPE)
    seen: list[list[int]] = []

    def model(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        seen.append(k.tolist())
        return torch.zeros_like(u)

    data = torch.full((6, *SHAPE), 10.0)  # T(k) x = 10 (1 − k/K): 0 only at k = K
    out = sample(model, forward, data, 3, delta, generator=torch.Generator().manual_seed(0))
    assert out.start.abs().max() < 6 * delta  # δ ε around T(K) x = 0, not T(K − 1) x = 2.5
    assert seen == [[k] * 3 for k in range(K, 0, -1)]
