"""The subspace sampler's batched posterior, packed temperatures and the UCI data."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from dynsweep.errors import DataError
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.paths.data import UCI_DIR, uci
from trainers.paths.model import unflatten
from trainers.paths.trainer import PathsConfig, PathsTrainer


def test_uci_is_split_and_standardised_as_the_original():
    import numpy as np

    raw = np.genfromtxt(UCI_DIR / "energy.data", delimiter=" ")
    splits = uci("energy", seed=3)
    sizes = {k: len(v[0]) for k, v in splits.items()}
    assert sizes == {"train": 537, "val": 77, "test": 154}  # int(0.7 n), int(0.8 n)
    whole = torch.cat([torch.cat([x, y], 1) for x, y in splits.values()]).double()
    # every column, the target too, by the whole file's mean and population std
    assert torch.allclose(whole.mean(0), torch.zeros(9, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(whole.std(0, correction=0), torch.ones(9, dtype=torch.float64), atol=1e-6)
    target = (raw[:, -1] - raw[:, -1].mean()) / raw[:, -1].std()
    assert sorted(whole[:, -1].tolist()) == pytest.approx(sorted(target.tolist()), abs=1e-5)
    again, other = uci("energy", seed=3), uci("energy", seed=4)
    assert torch.equal(again["test"][1], splits["test"][1])
    assert not torch.equal(other["test"][1], splits["test"][1])


def test_a_missing_uci_file_is_named(tmp_path):
    with pytest.raises(DataError, match="energy.data"):
        uci("energy", folder=tmp_path)
    (tmp_path / "energy.data").write_text("1 2 3\n4 x 6\n")
    with pytest.raises(DataError, match="energy.data"):
        uci("energy", folder=tmp_path)


def test_the_learnt_noise_scale_starts_at_the_originals_out_scale(tmp_path):
    trainer = PathsTrainer(PathsConfig(dataset="energy", order=1, depth=1, width=4))
    trainer.setup(LocalContext(tmp_path))
    assert float(trainer.log_scale) == pytest.approx(math.log(0.05))
    trainer = PathsTrainer(PathsConfig(dataset="energy", order=1, depth=1, width=4, noise_init=1))
    trainer.setup(LocalContext(tmp_path))
    assert float(trainer.log_scale) == 0.0


@pytest.fixture(scope="module")
def path_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("energy_path")
    cfg = PathsConfig(dataset="energy", order=2, depth=2, width=8, lr=0.01, dtype="float64")
    ctx = LocalContext(tmp / "run")
    fit(PathsTrainer(cfg), ctx, LoopConfig(eval_every=30), StopRule(iterations=30))
    model = tmp / "model.pt"
    header = {"trainer": "paths", "config": cfg.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": 30, "state": ctx.export}, model)
    return model


def _config(path_model, **kwargs):
    from trainers.paths.subspace_trainer import SubspaceConfig

    base = dict(
        path_model=str(path_model), sampler="mclmc", chains=3, warmup=3, steps_per_draw=4,
        draws=5, prior_scale=0.5,
    )  # fmt: skip
    return SubspaceConfig(**{**base, **kwargs})


@pytest.mark.parametrize("space", ["line", "varphi", "lambda", "fullspace"])
def test_the_batched_posterior_equals_each_chains_own_autograd(path_model, tmp_path, space):
    """Every chain's log density and gradient from the hand-batched MLP equal those of the
    network called on that chain alone (functional_call, one chain at a time)."""
    from trainers.paths.subspace_trainer import SubspaceTrainer

    kwargs = {"fullspace_init": "path"} if space == "fullspace" else {}
    trainer = SubspaceTrainer(_config(path_model, space=space, chains=4, temperature=3.0, **kwargs))
    trainer.setup(LocalContext(tmp_path))
    q = trainer.starts + 0.01 * torch.randn(trainer.starts.shape, dtype=torch.float64)
    logp, grad = trainer.posterior(q)
    path, space_ = trainer.path, trainer.space
    x, y = path.data["train"]
    for i in range(len(q)):
        qi = q[i].clone().requires_grad_(True)
        coords, log_scale = qi[:-1], qi[-1]
        weights = space_.weights(coords)
        out = functional_call(path.template, unflatten(weights, path.shapes), (x,)).flatten()
        resid = y.flatten() - out
        log_lik = (
            -0.5 * (math.log(2 * math.pi) + 2 * log_scale)
            - resid**2 / (2 * torch.exp(2 * log_scale))
        ).sum()
        loc, scale = trainer.noise_prior  # N(loc, scale²) on log σ
        noise = -0.5 * ((log_scale - loc) / scale) ** 2 - math.log(scale * math.sqrt(2 * math.pi))
        prior = space_.log_prior(coords) + noise
        expected = log_lik / 3.0 + prior
        (g,) = torch.autograd.grad(expected, qi)
        assert float(logp[i]) == pytest.approx(float(expected), rel=1e-12)
        assert torch.allclose(grad[i], g, rtol=1e-10, atol=1e-10)


def test_packed_temperatures_draw_what_unpacked_runs_draw(path_model, tmp_path):
    """float64: each member of a pack (its own temperature and seed) draws the same samples
    as its unpacked run, within 1e-10, and reports the same metrics."""
    from trainers.paths.subspace_packed import PackedSubspaceTrainer
    from trainers.paths.subspace_trainer import SubspaceTrainer

    points = [(1.0, 0), (4.6, 0), (21.5, 1)]
    alone = []
    for temperature, seed in points:
        ctx = LocalContext(tmp_path / f"alone{temperature}", seed=seed)
        trainer = SubspaceTrainer(_config(path_model, space="lambda", temperature=temperature))
        fit(trainer, ctx, LoopConfig(eval_every=10**6), StopRule(iterations=12))
        alone.append((ctx.export["samples"], ctx.metrics[-1][1]))
    packed = PackedSubspaceTrainer(
        [_config(path_model, space="lambda", temperature=t) for t, _ in points],
        [s for _, s in points],
    )
    packed.setup(LocalContext(tmp_path / "packed"))
    for _ in range(12):
        packed.step()
    metrics, exports = packed.evaluate(), packed.export()
    for i, (samples, final) in enumerate(alone):
        assert samples.shape == (3, 5, 3)
        assert (exports[i]["samples"] - samples).abs().max() < 1e-10
        assert metrics["val/lppd"][i] == pytest.approx(final["val/lppd"], abs=1e-9)
        assert metrics["val/lppd_val"][i] == pytest.approx(final["val/lppd_val"], abs=1e-9)
        assert metrics["val/grad_evals"][i] == final["val/grad_evals"]
    assert not torch.allclose(exports[0]["samples"], exports[1]["samples"])  # T matters


def test_a_pack_needs_mclmc_and_equal_settings(path_model):
    from trainers.paths.subspace_packed import PackedSubspaceTrainer

    with pytest.raises(ValueError, match="mclmc"):
        PackedSubspaceTrainer([_config(path_model, sampler="nuts")], [0])
    with pytest.raises(ValueError, match="temperature"):
        PackedSubspaceTrainer([_config(path_model), _config(path_model, chains=4)], [0, 0])


def test_freed_memory_is_kept_for_reuse_where_there_is_glibc():
    import platform

    from trainers.paths.posterior import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
