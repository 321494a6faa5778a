"""Subspace sampling as the original (Dold et al., ``jax_sub_sampling_from_path.py``) does it.

Reference values come from numpy re-implementations of the original's formulas on small fixed
inputs (``OrthoSpan``, ``init_model_line``, ``compute_metrics``, numpyro's ``LogNormal``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import comb, logsumexp

from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.paths import bezier, mclmc
from trainers.paths.diagnostics import diagnostics
from trainers.paths.sampling import Subspace, space
from trainers.paths.trainer import PathsConfig, PathsTrainer

THETA = torch.randn(4, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def original_orthospan(cp_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The original's OrthoSpan: (mu, pi, pi_inv)."""
    k = len(cp_w) - 1
    mu = cp_w.mean(0)
    _, s, vh = np.linalg.svd(cp_w - mu, full_matrices=False)
    return mu, s[:k, None] * vh[:k], vh[:k].T @ np.diag(1 / s[:k])


def original_d_bezier(cp: np.ndarray, t: np.ndarray) -> np.ndarray:
    """b′(t) = n Σ_j B_{j,n−1}(t) (cp_{j+1} − cp_j), for each t: len(t)×k."""
    n = len(cp) - 1
    j = np.arange(n)
    t = np.atleast_1d(t)[:, None]
    coeff = comb(n - 1, j) * t**j * (1 - t) ** (n - 1 - j)
    return n * coeff @ (cp[1:] - cp[:-1])


def original_line_log_prior(cp_phi: np.ndarray, u: float) -> float:
    """init_model_line's prior in numpyro's unconstrained u: Uniform(−0.1, 1.1) on t (a
    sigmoid transform) plus the factor log ‖b′(t)‖ − log L, L by trapezoid on 10,000 points."""
    tt = np.linspace(0.0, 1.0, 10_000)
    length = np.trapezoid(np.linalg.norm(original_d_bezier(cp_phi, tt), axis=1), tt)
    sig = 1 / (1 + np.exp(-u))
    t = -0.1 + 1.2 * sig
    log_uniform, log_jacobian = -np.log(1.2), np.log(1.2) + np.log(sig) + np.log(1 - sig)
    speed = np.linalg.norm(original_d_bezier(cp_phi, t)[0])
    return log_uniform + log_jacobian + np.log(speed) - np.log(length)


def test_scaled_basis_is_the_originals_orthospan():
    mu, pi, pi_inv = original_orthospan(THETA.numpy())
    cp_phi = (THETA.numpy() - mu) @ pi_inv
    sub = Subspace.from_control_points(THETA)
    phi = sub.coords(THETA).numpy()
    # SVD signs may differ: compare what they do not change.
    assert np.allclose(np.abs(phi), np.abs(cp_phi), atol=1e-10)
    assert np.allclose(sub.basis.numpy() @ sub.basis.numpy().T, pi @ pi.T, atol=1e-10)
    assert np.allclose(sub.weights(sub.coords(THETA)).numpy(), cp_phi @ pi + mu, atol=1e-10)
    # the varphi prior N(0, prior_scale) acts on the original's (singular-value) coordinates
    varphi = space("varphi", THETA, prior_scale=0.5)
    for row in cp_phi:
        reference = -0.5 * np.sum((row / 0.5) ** 2) - len(row) * np.log(0.5 * np.sqrt(2 * np.pi))
        sign = np.sign(phi[0] / cp_phi[0])
        assert float(varphi.log_prior(torch.tensor(row * sign))) == pytest.approx(reference)


def test_lambda_tube_width_and_prior_act_in_singular_value_units():
    tunnel = space("lambda", THETA, prior_scale=0.5, tube_scale=0.1)
    q0 = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    q1 = torch.tensor([0.3, 2.0, 0.0], dtype=torch.float64)
    assert float((tunnel.phi(q1) - tunnel.phi(q0)).norm()) == pytest.approx(0.2, rel=1e-8)
    # ξ ~ N(0, prior_scale²), the original's tube prior
    assert float(tunnel.log_prior(q1) - tunnel.log_prior(q0)) == pytest.approx(-0.5 * 4 / 0.25)


@pytest.mark.parametrize("u", [-3.0, -0.5, 0.0, 1.2, 4.0])
def test_line_prior_is_uniform_in_arc_length_on_the_originals_t_range(u):
    mu, _, pi_inv = original_orthospan(THETA.numpy())
    cp_phi = (THETA.numpy() - mu) @ pi_inv
    line = space("line", THETA, prior_scale=1.0)
    q = torch.tensor([u], dtype=torch.float64)
    assert float(line.log_prior(q)) == pytest.approx(original_line_log_prior(cp_phi, u), abs=1e-6)
    t = -0.1 + 1.2 * torch.sigmoid(q)  # t reaches below 0 and above 1
    assert torch.allclose(line.weights(q), bezier.point(THETA, t)[0], atol=1e-10)


def test_line_prior_reference_value():
    mu, _, pi_inv = original_orthospan(THETA.numpy())
    reference = original_line_log_prior((THETA.numpy() - mu) @ pi_inv, 0.0)
    assert reference == pytest.approx(-1.8193, abs=1e-4)  # the value the report quotes
    line = space("line", THETA, prior_scale=1.0)
    assert float(line.log_prior(torch.zeros(1, dtype=torch.float64))) == pytest.approx(
        reference, abs=1e-6
    )


def test_lppd_is_a_per_point_mean_and_loo_uses_the_given_training_split():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(2, 50, 3, generator=gen, dtype=torch.float64)
    train = -0.5 * torch.randn(2, 50, 20, generator=gen, dtype=torch.float64) ** 2
    test = -torch.rand(2, 50, 7, generator=gen, dtype=torch.float64)
    out = diagnostics(phi, train, test)
    ll = test.numpy().reshape(-1, 7)
    reference = np.mean(logsumexp(ll, axis=0) - np.log(len(ll)))  # compute_metrics' lppd
    assert out["lppd"] == pytest.approx(reference)
    assert out["lppd_sum"] == pytest.approx(7 * reference)
    import arviz as az

    loo = az.loo(az.from_dict(posterior={"x": phi.numpy()}, log_likelihood={"y": train.numpy()}))
    assert out["elpd_loo"] == pytest.approx(loo.elpd_loo) and out["p_loo"] == pytest.approx(
        loo.p_loo
    )


@pytest.fixture(scope="module")
def path_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("path")
    cfg = PathsConfig(order=2, width=8, lr=0.02)
    ctx = LocalContext(tmp / "run")
    fit(PathsTrainer(cfg), ctx, LoopConfig(eval_every=40), StopRule(iterations=40))
    model = tmp / "model.pt"
    header = {"trainer": "paths", "config": cfg.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": 40, "state": ctx.export}, model)
    return model


def _trainer(path_model, **kwargs):
    from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer

    trainer = SubspaceTrainer(SubspaceConfig(path_model=str(path_model), **kwargs))
    trainer.setup(LocalContext(path_model.parent / "sub"))
    return trainer


def test_homo_noise_is_sampled_under_the_originals_lognormal_prior(path_model):
    sampled = _trainer(path_model, space="varphi", starts="curve")
    fixed = _trainer(path_model, space="varphi", noise="fixed")
    assert sampled.dim == fixed.dim + 1
    phi = sampled.starts[0, :-1]
    log_sigma = torch.tensor(-1.3, dtype=phi.dtype)
    q = torch.cat([phi, log_sigma[None]])
    y = sampled.path.data["train"][1].flatten().numpy()
    mean = sampled.path.predict(sampled.space.weights(phi), "train").flatten().detach().numpy()
    sigma = math.exp(-1.3)
    log_lik = np.sum(-0.5 * np.log(2 * np.pi * sigma**2) - (y - mean) ** 2 / (2 * sigma**2))
    # numpyro: LogNormal(0, 1).log_prob(σ) plus the Jacobian log σ of σ = exp(u)
    lognormal = -np.log(sigma) - 0.5 * np.log(2 * np.pi) - 0.5 * np.log(sigma) ** 2
    expected = log_lik + float(sampled.space.log_prior(phi)) + lognormal + np.log(sigma)
    assert float(sampled.log_density(q)) == pytest.approx(expected, rel=1e-6)  # float32
    # chains start on the curve (t ∈ (0, 1)) at the path's learnt noise scale
    assert torch.allclose(sampled.starts[:, -1], sampled.log_scale.expand(2))
    on_curve = bezier.point(sampled.theta, torch.linspace(0, 1, 2001, dtype=phi.dtype))
    for start in sampled.starts:
        gap = (on_curve - sampled.space.weights(start[:-1])).norm(dim=1).min()
        assert float(gap) < 1e-3 * float(sampled.theta.norm())


def test_original_starts_are_unconstrained_values_as_blackjax_receives_them(path_model):
    """The original hands u ~ U(0, 1) to BlackJAX as t's unconstrained value (numpyro's
    Uniform(-0.1, 1.1) site: t = -0.1 + 1.2 sigmoid(u)) and exp(log σ) as log σ."""
    trainer = _trainer(path_model, space="lambda", chains=200)
    u = trainer.starts[:, 0]
    t = -0.1 + 1.2 * torch.sigmoid(u)
    assert float(u.min()) > 0 and float(u.max()) < 1  # u itself is the uniform draw
    assert float(t.min()) > 0.5 and float(t.max()) < -0.1 + 1.2 / (1 + math.exp(-1))
    assert torch.all(trainer.starts[:, 1:-1] == 0)  # on the curve: tube 0
    sigma = trainer.log_scale.exp()
    assert torch.allclose(trainer.starts[:, -1], sigma.expand(200))  # σ₀ = exp(σ_learnt)
    curve = _trainer(path_model, space="lambda", chains=200, starts="curve")
    t_curve = -0.1 + 1.2 * torch.sigmoid(curve.starts[:, 0])
    assert float(t_curve.min()) < 0.1 and float(t_curve.max()) > 0.9


def test_the_originals_line_carries_inert_tube_coordinates(path_model):
    """The original's line state holds t and K − 1 unused tube coordinates (zero gradient);
    line_inert: false samples t alone."""
    inert = _trainer(path_model, space="line", chains=3)
    alone = _trainer(path_model, space="line", chains=3, line_inert=False)
    k = len(inert.theta) - 1
    assert inert.dim == alone.dim + (k - 1) == 1 + (k - 1) + 1  # (t, tube…, log σ)
    q = inert.starts.clone()
    q[:, 1:-1] = torch.randn(3, k - 1, dtype=q.dtype)  # the tube moves: nothing changes
    logp, grad = inert.posterior(q)
    assert torch.allclose(logp, alone.posterior(q[:, [0, -1]])[0])
    assert torch.all(grad[:, 1:-1] == 0) and torch.all(grad[:, 0] != 0)


def test_fullspace_chains_start_from_trained_ensemble_members(path_model):
    from trainers.paths.ensemble import train_ensemble

    trainer = _trainer(path_model, space="fullspace", fullspace_init="path", chains=3)
    untrained, log_scales = train_ensemble(trainer.path, 3, 0, seed=0)
    members, log_scales = train_ensemble(trainer.path, 3, 60, seed=0)
    assert members.shape == (3, trainer.theta.shape[1])
    assert not torch.allclose(members[0], members[1])  # independent initialisations

    def val_nll(w, s):
        return float(-trainer.path.log_likelihood(w, "val", s).mean())

    for m in range(3):
        assert val_nll(members[m], log_scales[m]) < val_nll(untrained[m], torch.zeros(()))


def test_trainer_reports_loo_on_train_lppd_on_test_and_rhat_on_phi(path_model):
    import arviz as az

    from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer

    cfg = SubspaceConfig(
        path_model=str(path_model), space="line", line_inert=False, sampler="mclmc", chains=2,
        warmup=4, steps_per_draw=5, draws=20,
    )  # fmt: skip
    trainer = SubspaceTrainer(cfg)
    ctx = LocalContext(path_model.parent / "line")
    fit(trainer, ctx, LoopConfig(eval_every=10**6), StopRule(iterations=30))
    final = ctx.metrics[-1][1]
    draws = ctx.export["samples"]
    assert draws.shape == (2, 20, 2) and final["val/chains_done"] == 2  # (t, log σ)
    flat = draws.reshape(-1, 2)
    weights = torch.stack([trainer.space.weights(q[:1]) for q in flat])

    def pointwise(part):
        ll = [trainer.path.log_likelihood(w, part, q[1]) for w, q in zip(weights, flat)]
        return torch.stack(ll).reshape(2, 20, -1).detach().numpy()

    phi = torch.stack([trainer.space.phi(q[:1]) for q in flat]).reshape(2, 20, -1).numpy()
    train = az.from_dict(posterior={"phi": phi}, log_likelihood={"y": pointwise("train")})
    assert final["val/elpd_loo"] == pytest.approx(az.loo(train).elpd_loo, rel=1e-6)
    test = pointwise("test").reshape(40, -1)
    lppd = np.mean(logsumexp(test, axis=0) - np.log(40))
    assert final["val/lppd"] == pytest.approx(lppd, rel=1e-6)
    assert final["val/rhat_max"] == pytest.approx(float(az.rhat(train)["phi"].max()), rel=1e-6)
    assert final["val/grad_evals"] == 2 + 2 * 2 * (8 + 20 * 5)  # vectorised MCLMC steps


def _gaussian(mean, cov):
    precision = torch.linalg.inv(cov)

    def log_density(q):
        d = q - mean
        return -0.5 * ((d @ precision) * d).sum(-1), -(d @ precision)

    return log_density


@pytest.mark.parametrize("dim", [2, 5])
def test_mclmc_recovers_a_correlated_gaussian_with_converged_chains(dim):
    import arviz as az

    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    cov = a @ a.T / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
    mean = torch.randn(dim, generator=gen, dtype=torch.float64) * 2
    calls = []
    target = _gaussian(mean, cov)

    def log_density(q):
        calls.append(q.shape)
        return target(q)

    draws = mclmc.sample(log_density, torch.zeros(4, dim, dtype=torch.float64), 1000, 400, 4)
    assert set(calls) == {(4, dim)}  # every evaluation is of all chains together
    flat = draws.reshape(-1, dim)
    assert torch.allclose(flat.mean(0), mean, atol=0.2)
    assert torch.allclose(torch.cov(flat.T), cov, atol=0.3)
    rhat = az.rhat(az.from_dict(posterior={"x": draws.numpy()}))["x"].values
    assert rhat.max() < 1.1


def test_isokinetic_integrator_conserves_energy_to_second_order():
    target = _gaussian(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    x = torch.tensor([[1.0, -0.5, 0.3, 2.0]], dtype=torch.float64)
    errors = []
    for eps in (0.1, 0.05):
        logp, grad = target(x)
        u = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
        state = {"position": x, "momentum": u, "logdensity": logp, "grad": grad}
        total = torch.zeros(1, dtype=torch.float64)
        for _ in range(int(2 / eps)):  # the same time span
            new, kinetic = mclmc.integrate(
                state,
                torch.tensor([eps], dtype=torch.float64),
                target,
                mclmc.INTEGRATORS["mclachlan"],
            )
            total += kinetic - new["logdensity"] + state["logdensity"]
            assert abs(float(new["momentum"].norm()) - 1) < 1e-12
            state = new
        errors.append(float(total.abs()))
    assert errors[0] < 1e-2 and errors[1] < errors[0] / 3  # ~ε²


def test_mclmc_tunes_the_energy_error_and_resumes_exactly():
    target = _gaussian(torch.zeros(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64))
    start = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = mclmc.MCLMC(target, start, tune_steps=1000, seed=3)
    for _ in range(150):
        a.step()
    b = mclmc.MCLMC(target, start, tune_steps=1000, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(200):
        assert torch.equal(a.step(), b.step())
    assert not a.tuning
    changes = []
    for _ in range(400):
        a.step()
        changes.append(a.energy_change)
    changes = torch.stack(changes)
    per_dim = float((changes**2).mean() / 5)
    assert 5e-5 < per_dim < 5e-3  # tuned for Var[ΔE]/d ≈ 5e-4
    assert torch.all(a.L > 0) and torch.all(a.step_size > 0)


def test_mclmc_rejects_one_dimension():
    with pytest.raises(ValueError, match="2 dimensions"):
        mclmc.MCLMC(lambda q: (q.sum(-1), torch.ones_like(q)), torch.zeros(2, 1), 10)
