"""Bezier curves in weight space and the paths trainer."""

from __future__ import annotations

import pytest
import torch

from dynsweep.errors import DataError
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.paths import bezier
from trainers.paths.data import csv_regression, diabetes, toy_regression
from trainers.paths.trainer import PathsConfig, PathsTrainer


def test_derivatives_match_finite_differences():
    theta = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    h = 1e-6
    for nth, fn in [
        (1, lambda s: bezier.point(theta, s)),
        (2, lambda s: bezier.derivative(theta, s)),
    ]:
        inner = t.clamp(h, 1 - h)
        numeric = (fn(inner + h) - fn(inner - h)) / (2 * h)
        assert torch.allclose(bezier.derivative(theta, inner, nth), numeric, atol=1e-5)
    assert torch.allclose(bezier.point(theta, t[[0, -1]]), theta[[0, -1]])  # end points


def test_arc_length_parameters_space_points_equally_on_a_curve_with_uneven_speed():
    # A quadratic on the x axis whose speed varies tenfold: uniform t bunches the points.
    theta = torch.tensor([[0.0, 0.0], [0.05, 0.0], [1.0, 0.0]], dtype=torch.float64)
    xs = bezier.point(theta, bezier.arc_length_t(theta, 10))[:, 0]
    assert torch.allclose(xs, (torch.arange(10, dtype=torch.float64) + 0.5) / 10, atol=1e-4)
    uneven = bezier.point(theta, (torch.arange(10, dtype=torch.float64) + 0.5) / 10)[:, 0]
    assert uneven.diff().std() > 0.01


def test_curve_metrics_on_a_line_and_bounds_on_a_random_curve():
    line = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    m = bezier.metrics(line)
    assert m["length"] == pytest.approx(8**0.5, rel=1e-6)
    assert m["chord"] == pytest.approx(m["length"]) and m["polygon"] == pytest.approx(m["length"])
    for key in ("mean_curvature_s", "mean_curvature_t", "b2_integral"):
        assert m[key] == pytest.approx(0, abs=1e-6), key
    curve = bezier.metrics(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)))
    assert curve["chord"] <= curve["length"] <= curve["polygon"] + 1e-9
    assert curve["mean_curvature_s"] > 0 and curve["mean_curvature_t"] > 0


def test_regression_datasets_split_70_10_20_and_standardise(tmp_path):
    for splits in (toy_regression(0), diabetes(0)):
        n = {k: len(v[0]) for k, v in splits.items()}
        total = sum(n.values())
        assert n["train"] == int(0.7 * total) and n["val"] == int(0.1 * total)
        x, y = splits["train"]
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-5)
    x = toy_regression(0, n=200)["train"][0]
    assert x.shape[1] == 3  # [x, x², x³]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n")
    with pytest.raises(DataError, match="bad.csv"):
        csv_regression(bad)
    good = tmp_path / "good.csv"
    good.write_text("a,b,c\n" + "\n".join(f"{i},{i * 2},{i * 3 + 1}" for i in range(50)))
    assert csv_regression(good)["train"][0].shape == (35, 2)


@pytest.mark.parametrize("uniform_t", [False, True])
def test_a_short_run_lowers_the_loss_and_keeps_the_best_curve(tmp_path, uniform_t):
    cfg = PathsConfig(order=3, width=8, uniform_t=uniform_t, lr=0.02)
    ctx = LocalContext(tmp_path)
    fit(PathsTrainer(cfg), ctx, LoopConfig(eval_every=50), StopRule(iterations=150))
    vals = [m["val/loss"] for _, m in ctx.metrics if "val/loss" in m]
    assert vals[-1] < vals[0]
    last = ctx.metrics[-1][1]
    assert last["val/best_loss"] == pytest.approx(min(vals))
    assert last["val/path_polygon"] >= last["val/path_length"] >= last["val/path_chord"]
    assert ctx.export["theta"].shape[0] == 4


def test_subspace_reconstructs_the_control_points():
    from trainers.paths.sampling import Subspace

    theta = torch.randn(4, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    ortho = Subspace.from_control_points(theta, "orthonormal")
    assert ortho.basis.shape == (3, 50)
    assert torch.allclose(ortho.basis @ ortho.basis.T, eye, atol=1e-10)
    scaled = Subspace.from_control_points(theta)  # the original's: rows s_k v_k
    s = scaled.singular_values
    assert torch.allclose(scaled.basis @ scaled.basis.T, torch.diag(s**2), atol=1e-10)
    for sub in (ortho, scaled):
        assert torch.allclose(sub.weights(sub.coords(theta)), theta, atol=1e-10)


def test_nuts_recovers_a_gaussian_with_converged_chains():
    from trainers.paths.sampling import diagnostics, run_chains

    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    precision = torch.linalg.inv(cov)

    def potential(q):
        d = q - mean
        return 0.5 * d @ precision @ d

    draws = run_chains(potential, torch.zeros(2), chains=2, warmup=200, draws=800, seed=0)
    flat = draws.reshape(-1, 2)
    assert torch.allclose(flat.mean(0), mean, atol=0.2)
    assert torch.allclose(torch.cov(flat.T), cov, atol=0.3)
    log_lik = -0.5 * (draws[..., :1] - mean[0]) ** 2  # any pointwise log-likelihood
    assert diagnostics(draws, log_lik)["rhat_max"] < 1.1


@pytest.mark.parametrize(
    "space, dataset",
    [
        # (the toy chains run long enough to converge: ~1 min each, in the slow tier)
        pytest.param("line", "toy", marks=pytest.mark.slow),
        pytest.param("varphi", "toy", marks=pytest.mark.slow),
        pytest.param("lambda", "toy", marks=pytest.mark.slow),
        ("varphi", "digits"),
    ],
)
def test_subspace_sampling_around_a_trained_path(tmp_path, space, dataset):
    from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer

    cfg = PathsConfig(order=2, width=8, depth=1 if dataset == "digits" else 2, dataset=dataset)
    ctx = LocalContext(tmp_path / "path")
    fit(PathsTrainer(cfg), ctx, LoopConfig(eval_every=100), StopRule(iterations=100))
    model = tmp_path / "model.pt"
    header = {"trainer": "paths", "config": cfg.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": 100, "state": ctx.export}, model)

    sub = SubspaceConfig(path_model=str(model), space=space, chains=2, warmup=20, draws=30)
    sctx = LocalContext(tmp_path / space)
    fit(SubspaceTrainer(sub), sctx, LoopConfig(eval_every=10**6), StopRule(iterations=100))
    final = sctx.metrics[-1][1]
    assert final["val/chains_done"] == 2
    assert sctx.export["samples"].shape[:2] == (2, 30)
    fit_key = "val/acc" if dataset == "digits" else "val/rmse"
    for key in ("val/rhat_max", "val/ess_bulk_min", "val/lppd", "val/elpd_loo", fit_key):
        assert key in final and final[key] == final[key]  # present, not NaN
    assert final["val/grad_evals"] >= 100
    if dataset == "digits":  # sampling around a trained classifier path predicts well
        assert final["val/acc"] > 0.5


def test_subspace_names_a_missing_path_model(tmp_path):
    from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer

    with pytest.raises(DataError, match="config.path_model"):
        SubspaceTrainer.prepare([SubspaceConfig(path_model=str(tmp_path / "nope.pt"))], tmp_path)


def test_rotation_minimising_frame_keeps_the_binormal_of_a_planar_curve():
    from trainers.paths.sampling import rotation_minimising_frame

    # A planar curve in 3-D (the xy-plane): the frame vector along z must stay along z.
    t = torch.linspace(0, 1, 200, dtype=torch.float64)
    pts = torch.stack([torch.cos(3 * t), torch.sin(3 * t), torch.zeros_like(t)], 1)
    tangents = torch.stack([-torch.sin(3 * t), torch.cos(3 * t), torch.zeros_like(t)], 1)
    frames = rotation_minimising_frame(pts, tangents)
    gram = frames @ frames.transpose(1, 2)
    assert torch.allclose(gram, torch.eye(2, dtype=torch.float64).expand_as(gram), atol=1e-8)
    assert (frames @ tangents[:, :, None]).abs().max() < 1e-3  # ⊥ the tangent
    z = frames[:, :, 2].abs().max(1).values
    assert torch.allclose(z, torch.ones_like(z), atol=1e-6)  # one normal stays along z


def test_lambda_space_with_zero_offset_lies_on_the_curve():
    from trainers.paths.sampling import space

    theta = torch.randn(4, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    tunnel = space("lambda", theta, 1.0, tube_scale=0.5, basis="orthonormal")
    assert tunnel.dim == 3  # (t, ξ_1, ξ_2) around a cubic curve in its 3-D subspace
    for s in (-2.0, 0.0, 1.5):
        q = torch.tensor([s, 0.0, 0.0], dtype=torch.float64)
        t = -0.1 + 1.2 * torch.sigmoid(q[:1])  # t on the original's (-0.1, 1.1)
        assert torch.allclose(tunnel.weights(q), bezier.point(theta, t)[0], atol=1e-8)
        assert torch.isfinite(tunnel.log_prior(q))
    off = tunnel.weights(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    zero = tunnel.weights(torch.zeros(3, dtype=torch.float64))
    assert float((off - zero).norm()) == pytest.approx(0.5, rel=1e-6)
    # a unit ξ moves the tube scale away from the curve (in weight units: orthonormal basis)


@pytest.mark.slow
def test_mode_connectivity_between_two_trained_networks(tmp_path):
    """Order 0 trains one network; a curve with endpoints keeps both fixed and bends between."""
    ends = []
    for seed in (0, 1):
        ctx = LocalContext(tmp_path / f"net{seed}", seed=seed)
        config = PathsConfig(order=0, width=8, lr=0.02)
        fit(PathsTrainer(config), ctx, LoopConfig(eval_every=50), StopRule(iterations=150))
        path = tmp_path / f"net{seed}.pt"
        header = {"trainer": "paths", "config": config.model_dump(), "seed": seed}
        torch.save({**header, "state": ctx.export}, path)
        ends.append(path)
    config = PathsConfig(order=3, width=8, lr=0.01, endpoints=(str(ends[0]), str(ends[1])))
    PathsTrainer.prepare([config], tmp_path)
    ctx = LocalContext(tmp_path / "curve", seed=5)
    trainer = PathsTrainer(config)
    fit(trainer, ctx, LoopConfig(eval_every=20), StopRule(iterations=60))
    theta = trainer.theta.detach()
    for i, path in ((0, ends[0]), (-1, ends[1])):
        assert torch.equal(theta[i], torch.load(path, weights_only=True)["state"]["theta"][0])
    line = torch.linspace(0, 1, 4)[:, None]
    assert not torch.allclose(theta[1:3], ((1 - line) * theta[0] + line * theta[-1])[1:3])
    losses = [m["val/loss"] for _, m in ctx.metrics if "val/loss" in m]
    assert losses[-1] < losses[0]  # the bent curve beats the straight line between the ends


def test_bad_endpoint_files_are_named(tmp_path):
    missing = PathsConfig(order=2, endpoints=(str(tmp_path / "a.pt"), str(tmp_path / "b.pt")))
    with pytest.raises(DataError, match="a.pt.*order 0"):
        PathsTrainer.prepare([missing], tmp_path)
    curve = tmp_path / "curve.pt"
    theta = torch.zeros(3, 10)
    torch.save({"trainer": "paths", "state": {"theta": theta}}, curve)
    with pytest.raises(DataError, match="not one trained network"):
        PathsTrainer.prepare([PathsConfig(order=2, endpoints=(str(curve), str(curve)))], tmp_path)
