"""Reference PSIS-LOO values as the original (Dold et al.) computes them, for
``tests/trainers/test_diagnostics_loo.py``.

The original (``jax_sub_sampling_from_path.py``) calls ``az.loo(samples)`` on an InferenceData
whose posterior group holds every site numpyro's ``post_proc_fun`` returns (constrained values):
for the lambda space ``t`` (1,), ``tube`` (k − 1,), ``scale`` () and the deterministic
``varphi`` (k,). ArviZ then takes the relative efficiency from all of them. This script builds a
small fixed posterior of that shape (numpy only, so that the test can rebuild it) and prints
``elpd_loo`` / ``p_loo`` from arviz 0.18.0, the original's pin, plus those of a posterior of φ
alone (what dynsweep computed before).

Run with the original's environment (arviz 0.18.0):
    /work/orig/venv/bin/python tests/trainers/reference/loo_arviz.py
"""

from __future__ import annotations

import numpy as np

CHAINS, DRAWS, K, N = 4, 500, 3, 20


def ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> np.ndarray:
    """chains × draws × … AR(1) series with unit stationary variance."""
    eps = rng.standard_normal((CHAINS, DRAWS, *shape))
    out = np.empty_like(eps)
    out[:, 0] = eps[:, 0]
    for s in range(1, DRAWS):
        out[:, s] = rho * out[:, s - 1] + np.sqrt(1 - rho**2) * eps[:, s]
    return out


def case() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The posterior (the original's lambda-space sites, constrained) and the pointwise
    log-likelihood, chains × draws × N: a heavy-tailed (Student-t, 3 dof) regression on φ."""
    rng = np.random.default_rng(26)
    t = 0.5 + 0.1 * ar1(rng, (1,), 0.95)  # slowly mixing: low ESS
    scale = np.exp(-1.0 + 0.2 * ar1(rng, (), 0.9))
    tube = 0.3 * ar1(rng, (K - 1,), 0.0)
    varphi = 0.15 * ar1(rng, (K,), 0.1) + np.array([1.0, -0.5, 0.2])
    x = rng.standard_normal((N, K))
    y = x @ np.array([1.0, -0.5, 0.2]) + 0.4 * rng.standard_t(3, N)
    z = (y - varphi @ x.T) / scale[..., None]
    log_lik = -2.0 * np.log1p(z**2 / 3) - np.log(scale[..., None]) - 0.5 * np.log(3) - 0.63
    posterior = {"t": t, "tube": tube, "scale": scale, "varphi": varphi}
    return posterior, log_lik


if __name__ == "__main__":
    import arviz as az

    posterior, log_lik = case()
    print("arviz", az.__version__)
    for name, post in (("original", posterior), ("phi_only", {"varphi": posterior["varphi"]})):
        loo = az.loo(az.from_dict(posterior=post, log_likelihood={"obs": log_lik}))
        ess = az.ess(az.from_dict(posterior=post), method="mean")
        reff = np.hstack([ess[v].values.flatten() for v in ess.data_vars]).mean() / (CHAINS * DRAWS)
        print(f"{name}: reff={reff!r} elpd_loo={loo.elpd_loo!r} p_loo={loo.p_loo!r}")
