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
  log-likelihood of the training split, the data the posterior was conditioned on. Its relative
  efficiency r_eff (the length of the Pareto-smoothed tail) is the original's: the original calls
  ``az.loo`` on a posterior group of every site numpyro's ``post_proc_fun`` returns, constrained
  (lambda: ``t`` (1,), ``tube`` (k − 1,), ``scale``, ``varphi``; line: ``t``, ``scale``,
  ``varphi``; varphi: ``varphi``, ``scale``; ``scale`` only where σ is sampled), so r_eff is the
  mean over every element of every variable of ArviZ's ``ess(method="mean")``, divided by
  chains × draws (r_eff = 1 for one chain), as in ``arviz.loo`` 0.18.0. It is computed here
  and passed as ``reff``, so a later ArviZ cannot change it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def lppd(log_lik: torch.Tensor) -> torch.Tensor:
    """Pointwise log predictive density, n: log mean_s exp(log_lik[s, i]) over all samples
    (``log_lik``: … × n, every leading dimension a sample)."""
    ll = log_lik.detach().double().reshape(-1, log_lik.shape[-1])
    return torch.logsumexp(ll, 0) - math.log(len(ll))


def relative_efficiency(posterior: Mapping[str, torch.Tensor]) -> float:
    """PSIS-LOO's r_eff as ``arviz.loo`` 0.18.0 computes it from a posterior group: the mean of
    ``az.ess(method="mean")`` over every element of every variable, over chains × draws; 1.0 for
    a single chain. ``posterior``: name → chains × draws × …"""
    import arviz as az
    import numpy as np

    chains, draws = next(iter(posterior.values())).shape[:2]
    if chains == 1:
        return 1.0
    data = az.from_dict(posterior={k: _numpy(v) for k, v in posterior.items()})
    ess = az.ess(data, method="mean")
    return float(
        np.hstack([ess[v].values.flatten() for v in ess.data_vars]).mean() / (chains * draws)
    )


def _numpy(x: torch.Tensor):
    return x.detach().cpu().double().numpy()


def diagnostics(
    posterior: Mapping[str, torch.Tensor] | torch.Tensor,
    log_lik_train: torch.Tensor,
    log_lik_test: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
) -> dict[str, float]:
    """R-hat, bulk ESS, LPPD and PSIS-LOO (see the module docstring).

    ``posterior``: name → chains × draws × …, the original's posterior group, constrained
    (e.g. ``{"t": C×S×1, "tube": C×S×(k−1), "scale": C×S, "varphi": C×S×k}``); it must hold
    ``"varphi"`` (φ, for R-hat and ESS). Every variable enters PSIS-LOO's r_eff. A tensor is read
    as ``{"varphi": tensor}`` (r_eff from φ alone). ``log_lik_train`` (``log_lik_test``):
    chains × draws × n, pointwise; ``q``: chains × draws × dim, the sampler's coordinates
    (default: φ). Without ``log_lik_test`` the LPPD is of the training split.
    """
    import arviz as az
    import numpy as np

    if isinstance(posterior, torch.Tensor):
        posterior = {"varphi": posterior}
    if "varphi" not in posterior:
        raise ValueError(f"posterior: needs 'varphi' (φ), got {sorted(posterior)}")
    lead = tuple(log_lik_train.shape[:2])
    for name, value in posterior.items():
        if tuple(value.shape[:2]) != lead:
            raise ValueError(
                f"posterior[{name!r}]: chains × draws {tuple(value.shape[:2])} != the "
                f"log-likelihood's {lead}"
            )
    phi = posterior["varphi"]

    def rhat_ess(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        data = az.from_dict(posterior={"x": _numpy(x)})
        rhat = az.rhat(data, var_names=["x"])["x"].values
        return rhat, az.ess(data, var_names=["x"], method="bulk")["x"].values

    rhat, ess = rhat_ess(phi)
    rhat_q, ess_q = (rhat, ess) if q is None else rhat_ess(q)
    train = az.from_dict(posterior={"x": _numpy(phi)}, log_likelihood={"y": _numpy(log_lik_train)})
    loo = az.loo(train, pointwise=False, reff=relative_efficiency(posterior))
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
