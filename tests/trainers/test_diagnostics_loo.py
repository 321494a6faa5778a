"""PSIS-LOO's relative efficiency as the original computes it (issue 26, part 3).

The reference numbers come from arviz 0.18.0 (the original's pin) calling ``az.loo`` as the
original does, on the fixed case of ``tests/trainers/reference/loo_arviz.py``:
    /work/orig/venv/bin/python tests/trainers/reference/loo_arviz.py
"""

from __future__ import annotations

import pytest
import torch

from tests.trainers.reference.loo_arviz import case
from trainers.paths.diagnostics import diagnostics, relative_efficiency

# arviz 0.18.0, posterior group {t, tube, scale, varphi} (the original's lambda space)
REFF = 0.6274548629708286
ELPD_LOO = -40.80997840134979
P_LOO = 5.710007684475393
# the same with a posterior group of φ alone (dynsweep before this change)
REFF_PHI = 0.7754497155069839
ELPD_LOO_PHI = -40.810238485772956


def tensors() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    posterior, log_lik = case()
    return {k: torch.from_numpy(v) for k, v in posterior.items()}, torch.from_numpy(log_lik)


def test_loo_takes_reff_from_every_posterior_variable_as_arviz_0_18():
    posterior, log_lik = tensors()
    assert relative_efficiency(posterior) == pytest.approx(REFF, rel=1e-12)
    out = diagnostics(posterior, log_lik)
    assert out["elpd_loo"] == pytest.approx(ELPD_LOO, abs=1e-9)
    assert out["p_loo"] == pytest.approx(P_LOO, abs=1e-9)
    # φ alone gives another tail length, and another value (what the reference tells apart)
    assert abs(ELPD_LOO - ELPD_LOO_PHI) > 1e-4


def test_phi_alone_is_the_varphi_only_posterior():
    posterior, log_lik = tensors()
    phi = posterior["varphi"]
    assert relative_efficiency({"varphi": phi}) == pytest.approx(REFF_PHI, rel=1e-12)
    out = diagnostics(phi, log_lik)
    assert out["elpd_loo"] == pytest.approx(ELPD_LOO_PHI, abs=1e-9)
    # R-hat and ESS stay φ's whatever else the posterior holds
    full = diagnostics(posterior, log_lik)
    for key in ("rhat_max", "ess_bulk_min", "ess_bulk_mean", "lppd"):
        assert full[key] == out[key]


def test_one_chain_has_reff_one():
    posterior, _ = tensors()
    assert relative_efficiency({k: v[:1] for k, v in posterior.items()}) == 1.0


def test_bad_posterior_names_the_field():
    posterior, log_lik = tensors()
    with pytest.raises(ValueError, match="varphi"):
        diagnostics({"t": posterior["t"]}, log_lik)
    with pytest.raises(ValueError, match="'scale'"):
        diagnostics({**posterior, "scale": posterior["scale"][:, :10]}, log_lik)
