"""Posterior diagnostics reported as the original (Dold et al.) reports them.

- ``rhat_max`` / ``rhat_mean``, ``ess_bulk_min`` / ``ess_bulk_mean``: ArviZ rank-normalised
  split R-hat and bulk ESS over the dimensions of φ (the subspace coordinates, for every
  space; the original's ``az.summary(var_names=["varphi"])``). ``rhat_max_q`` and
  ``ess_bulk_min_q``: the same on the sampler's own coordinates q (this project's earlier
  ``rhat_max`` / ``ess_bulk_min``; not comparable with the original's).
- ``lppd``: the per-point mean over the test split of log (1/S) Σ_s p(y_i | θ_s) (the
  original's ``elpd_test``); ``lppd_sum``: its sum over points (this project's earlier
  ``lppd``).
- ``elpd_loo`` / ``p_loo``: PSIS-LOO (ArviZ, a sum over points) on the pointwise
  log-likelihood of the training split, the data the posterior was conditioned on.
"""

from __future__ import annotations

import math

import torch


def lppd(log_lik: torch.Tensor) -> torch.Tensor:
    """Pointwise log predictive density, n: log mean_s exp(log_lik[s, i]) over all samples
    (``log_lik``: … × n, every leading dimension a sample)."""
    ll = log_lik.detach().double().reshape(-1, log_lik.shape[-1])
    return torch.logsumexp(ll, 0) - math.log(len(ll))


def diagnostics(
    phi: torch.Tensor,
    log_lik_train: torch.Tensor,
    log_lik_test: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
) -> dict[str, float]:
    """R-hat, bulk ESS, LPPD and PSIS-LOO (see the module docstring).

    ``phi``: chains × draws × K; ``log_lik_train`` (``log_lik_test``): chains × draws × n,
    pointwise; ``q``: chains × draws × dim, the sampler's coordinates (default: ``phi``).
    Without ``log_lik_test`` the LPPD is of the training split.
    """
    import arviz as az
    import numpy as np

    def as_numpy(x: torch.Tensor):
        return x.detach().cpu().double().numpy()

    def rhat_ess(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        data = az.from_dict(posterior={"x": as_numpy(x)})
        rhat = az.rhat(data, var_names=["x"])["x"].values
        return rhat, az.ess(data, var_names=["x"], method="bulk")["x"].values

    rhat, ess = rhat_ess(phi)
    rhat_q, ess_q = (rhat, ess) if q is None else rhat_ess(q)
    train = az.from_dict(
        posterior={"x": as_numpy(phi)}, log_likelihood={"y": as_numpy(log_lik_train)}
    )
    loo = az.loo(train, pointwise=False)
    pointwise = lppd(log_lik_train if log_lik_test is None else log_lik_test)
    return {
        "rhat_max": float(np.max(rhat)),
        "rhat_mean": float(np.mean(rhat)),
        "ess_bulk_min": float(np.min(ess)),
        "ess_bulk_mean": float(np.mean(ess)),
        "rhat_max_q": float(np.max(rhat_q)),
        "ess_bulk_min_q": float(np.min(ess_q)),
        "lppd": float(pointwise.mean()),
        "lppd_sum": float(pointwise.sum()),
        "elpd_loo": float(loo.elpd_loo),
        "p_loo": float(loo.p_loo),
    }
