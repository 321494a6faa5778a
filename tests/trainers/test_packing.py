"""Vectorised packing: a packed trainer's members train exactly as they would alone."""

from __future__ import annotations

import math

import pytest
import torch

from dynsweep.errors import TrialFailure
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.packing import StackedAdam, pack_key, packed_class
from trainers.paths.packed import PackedPathsTrainer
from trainers.paths.trainer import PathsConfig, PathsTrainer

LOOP = LoopConfig(report_every=5, eval_every=10, checkpoint_every=20)


def test_stacked_adam_is_torch_adam_per_member_with_its_own_lr():
    gen = torch.Generator().manual_seed(0)
    lrs = [1e-2, 3e-3, 1e-1]
    alone = [torch.randn(5, 4, generator=gen, requires_grad=True) for _ in lrs]
    optimizers = [torch.optim.Adam([w], lr=lr) for w, lr in zip(alone, lrs)]
    stacked = torch.stack([w.detach().clone() for w in alone]).requires_grad_()
    packed = StackedAdam([stacked], torch.tensor(lrs))
    x = torch.randn(10, 5, generator=gen)
    for _ in range(100):
        for w, opt in zip(alone, optimizers):
            opt.zero_grad()
            (x @ w).sin().sum().backward()
            opt.step()
        packed.zero_grad()
        torch.vmap(lambda w: (x @ w).sin().sum())(stacked).sum().backward()
        packed.step()
    assert (stacked - torch.stack(alone)).abs().max() < 1e-5
    assert (stacked[0] - stacked[2]).abs().max() > 0.1  # the learning rates mattered


def run_alone(config: PathsConfig, seed: int, tmp_path, steps: int) -> LocalContext:
    ctx = LocalContext(tmp_path / f"alone{seed}", seed=seed)
    fit(PathsTrainer(config), ctx, LOOP, StopRule(iterations=steps))
    return ctx


def test_packed_members_equal_unpacked_runs(tmp_path):
    base = {"order": 3, "width": 8, "t_samples": 4, "noise_init": 1.0}  # float32: losses ~1
    configs = [
        PathsConfig(**base, lr=0.01),
        PathsConfig(**base, lr=0.02, uniform_t=True),
        PathsConfig(**base, lr=0.005),
    ]
    seeds = [0, 1, 2]
    assert len({pack_key(PathsTrainer, c) for c in configs}) == 1
    assert packed_class(PathsTrainer) is PackedPathsTrainer
    ctx = LocalContext.packed(tmp_path / "pack", len(configs))
    packed = PackedPathsTrainer(configs, seeds)
    fit(packed, ctx, LOOP, StopRule(iterations=40))
    exports = packed.export()
    for i, (config, seed) in enumerate(zip(configs, seeds)):
        alone = run_alone(config, seed, tmp_path, 40)
        member = ctx.members[i]
        assert [s for s, _ in member.metrics] == [s for s, _ in alone.metrics]
        for (step, got), (_, want) in zip(member.metrics, alone.metrics):
            assert got.keys() == want.keys(), step
            for key in want:
                tol = 1e-5 if "loss" in key else 1e-5 * abs(want[key])
                assert math.isclose(got[key], want[key], abs_tol=max(tol, 1e-6)), (i, step, key)
        assert torch.allclose(exports[i]["theta"], alone.export["theta"], atol=1e-5)
    # The scheduler sees the members' mean.
    last = ctx.reports[-1][1]
    finals = [m.metrics[-1][1]["val/best_loss"] for m in ctx.members]
    assert last["val/best_loss"] == pytest.approx(sum(finals) / 3)
    assert last["pack/live_members"] == 3


def test_a_diverging_member_fails_alone_and_the_others_go_on(tmp_path):
    configs = [PathsConfig(order=2, width=8, lr=lr) for lr in (0.01, math.inf)]
    ctx = LocalContext.packed(tmp_path / "pack", 2)
    fit(PackedPathsTrainer(configs, [0, 1]), ctx, LOOP, StopRule(iterations=20))
    healthy, diverged = ctx.members
    assert healthy.failure is None and diverged.failure is not None
    with pytest.raises(TrialFailure) as alone:
        run_alone(configs[1], 1, tmp_path, 20)
    assert diverged.failure == str(alone.value)  # the same message as an unpacked run
    assert [s for s, _ in healthy.metrics] == [
        s for s, _ in run_alone(configs[0], 0, tmp_path, 20).metrics
    ]
    assert ctx.reports[-1][1]["pack/live_members"] == 1

    everyone = LocalContext.packed(tmp_path / "all", 2)
    bad = [configs[1], configs[1]]
    with pytest.raises(TrialFailure):  # the trial fails when no member is left
        fit(PackedPathsTrainer(bad, [0, 1]), everyone, LOOP, StopRule(iterations=20))


def test_packs_resume_from_a_checkpoint_exactly(tmp_path):
    configs = [PathsConfig(order=2, width=8, lr=lr) for lr in (0.01, 0.03)]
    straight = LocalContext.packed(tmp_path / "a", 2)
    fit(PackedPathsTrainer(configs, [3, 4]), straight, LOOP, StopRule(iterations=40))
    first = LocalContext.packed(tmp_path / "b", 2)
    fit(PackedPathsTrainer(configs, [3, 4]), first, LOOP, StopRule(iterations=20))
    resumed = LocalContext.packed(tmp_path / "c", 2)
    fit(
        PackedPathsTrainer(configs, [3, 4]),
        resumed,
        LOOP,
        StopRule(iterations=40),
        resume=first.last_checkpoint,
    )
    for a, c in zip(straight.members, resumed.members):
        assert a.metrics[-1] == c.metrics[-1]


def test_configs_that_differ_in_architecture_cannot_share_a_pack():
    with pytest.raises(ValueError, match="uniform_t, lr"):
        PackedPathsTrainer([PathsConfig(order=2), PathsConfig(order=3)], [0, 1])


def test_packed_cnn_classification_on_digits_with_minibatches_equals_unpacked(tmp_path):
    base = {
        "dataset": "digits",
        "architecture": "cnn",
        "order": 1,
        "width": 8,
        "depth": 1,
        "t_samples": 2,
        "batch_size": 64,
        "eval_points": 3,
    }
    configs = [PathsConfig(**base, lr=0.01), PathsConfig(**base, lr=0.003, uniform_t=True)]
    ctx = LocalContext.packed(tmp_path / "pack", 2)
    fit(PackedPathsTrainer(configs, [0, 1]), ctx, LOOP, StopRule(iterations=20))
    for i, config in enumerate(configs):
        alone = run_alone(config, i, tmp_path, 20)
        got, want = ctx.members[i].metrics[-1][1], alone.metrics[-1][1]
        assert "val/acc" in want and "train/noise_scale" not in want
        for key in ("train/loss", "val/loss", "val/acc"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), key
    first, last = ctx.members[0].metrics[0][1], ctx.members[0].metrics[-1][1]
    assert last["val/loss"] < first["val/loss"]  # it learns


def test_packed_initial_control_points_equal_the_unpacked_ones():
    from trainers.paths.model import initial_control_points
    from trainers.paths.packed import initial_points

    for config, shape in [
        (PathsConfig(order=3, width=8), (3,)),
        (PathsConfig(dataset="digits", architecture="cnn", order=1, width=4), (1, 8, 8)),
    ]:
        want = torch.stack([initial_control_points(config, shape, s) for s in (0, 5, 7)])
        assert torch.equal(initial_points(config, shape, [0, 5, 7]), want)


def test_batched_curve_functions_equal_the_unbatched_ones_in_float64():
    from trainers.paths import bezier

    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4, 5, 30, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    scale = torch.arange(6.0, dtype=torch.float64)
    got = bezier.arc_length_weights_batch(theta, t)
    want = torch.stack([bezier.arc_length_weights(th, ts) for th, ts in zip(theta, t)])
    assert (got - want).abs().max() < 1e-13
    (g_got,) = torch.autograd.grad((got * scale).sum(), theta)
    (g_want,) = torch.autograd.grad((want * scale).sum(), theta)
    assert (g_got - g_want).abs().max() < 1e-13 * g_want.abs().max()
    assert torch.equal(
        bezier.points(theta, t), torch.stack([bezier.point(th, ts) for th, ts in zip(theta, t)])
    )
    batch = bezier.metrics_batch(theta)
    for i, th in enumerate(theta):
        for key, value in bezier.metrics(th).items():
            assert batch[key][i] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize(
    "base, tol",
    [
        ({"activation": "elu", "dataset": "diabetes"}, 1e-12),  # 10 inputs: a matrix product
        ({"activation": "tanh", "depth": 1}, 1e-12),
        # Inputs shared by all members (one product). Rounding grows faster on digits: the
        # vmap form this replaced differed from the unpacked runs as much (8e-10 at step 5).
        ({"dataset": "digits", "order": 1, "depth": 1, "eval_points": 3}, 1e-8),
    ],
)
def test_packed_mlp_members_equal_unpacked_runs_in_float64(tmp_path, base, tol):
    base = {"width": 4, "t_samples": 3, "dtype": "float64", "order": 2, **base}
    configs = [PathsConfig(**base, lr=0.01), PathsConfig(**base, lr=0.02, uniform_t=True)]
    loop = LoopConfig(report_every=5, eval_every=5, checkpoint_every=10)
    ctx = LocalContext.packed(tmp_path / "pack", 2)
    fit(PackedPathsTrainer(configs, [0, 1]), ctx, loop, StopRule(iterations=10))
    for i, config in enumerate(configs):
        alone = LocalContext(tmp_path / f"alone{i}", seed=i)
        fit(PathsTrainer(config), alone, loop, StopRule(iterations=10))
        for (step, got), (_, want) in zip(ctx.members[i].metrics, alone.metrics, strict=True):
            for key in want:
                assert math.isclose(got[key], want[key], rel_tol=tol, abs_tol=tol), (i, step, key)
