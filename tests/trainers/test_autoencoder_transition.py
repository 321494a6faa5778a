"""The original's transition quantity (per-eigenimage |FFT2| MSE, ``scripts/AE_fft.py``'s
``generate_fft_mse_pdf``) and the numerical rank of the reconstructions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from pydantic import ValidationError

from trainers.autoencoder import spectra
from trainers.autoencoder.trainer import AutoencoderConfig, AutoencoderTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit


def original_ffts(vt: np.ndarray, shape) -> np.ndarray:
    """``calculate_ffts`` of ``torch.svd``'s V (rows here), ``fft2d`` centred and normalised."""
    out = []
    for row in vt:
        zzf = np.abs(scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(row.reshape(shape)))))
        out.append(zzf / zzf.shape[0])
    return np.stack(out)


def test_fft_error_is_the_originals_mse_times_the_pixel_count():
    rng = np.random.default_rng(3)
    a, b = rng.random((30, 36)), rng.random((30, 36))  # 30 images of 6×6
    va = np.linalg.svd(a, full_matrices=False)[2]
    vb = np.linalg.svd(b, full_matrices=False)[2]
    fa, fb = original_ffts(va, (6, 6)), original_ffts(vb, (6, 6))
    mse = np.mean((fa - fb) ** 2, axis=(1, 2))  # generate_fft_mse_pdf
    ours = spectra.fft_error(
        spectra.centred_fft(spectra.eigenimages(torch.tensor(a).reshape(30, 1, 6, 6), 30)),
        spectra.centred_fft(spectra.eigenimages(torch.tensor(b).reshape(30, 1, 6, 6), 30)),
    )
    np.testing.assert_allclose(ours.numpy(), mse * 36, rtol=1e-9, atol=1e-12)
    # a unit eigenimage's spectrum has energy 1 (Parseval): identical is 0, and two
    # non-negative spectra of energy 1 differ by at most 2
    assert np.allclose((fa**2).sum((1, 2)), 1.0)
    assert (ours >= 0).all() and (ours <= 2).all()
    same = spectra.centred_fft(spectra.eigenimages(torch.tensor(a).reshape(30, 1, 6, 6), 30))
    assert float(spectra.fft_error(same, same).max()) == 0.0


@pytest.mark.parametrize("bias", [True, False])
def test_the_rank_of_a_bottleneck_map_is_b_plus_one_with_a_bias(bias):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 8, 8, generator=g)
    for b in (1, 3, 7):
        enc, dec = torch.nn.Linear(64, b, bias=bias), torch.nn.Linear(b, 64, bias=bias)
        with torch.no_grad():
            out = dec(enc(x.reshape(300, 64))).reshape(300, 1, 8, 8)
        s, eig = spectra.singular(out, 5)
        assert eig.shape == (5, 8, 8)
        assert spectra.numerical_rank(s, 1e-4) == b + bias
    assert spectra.numerical_rank(torch.zeros(4, dtype=torch.float64), 1e-4) == 0


def test_the_trainer_reports_the_fft_frame_and_the_rank(tmp_path):
    cfg = AutoencoderConfig.model_validate(
        {
            "model": {"kind": "mlp", "bottleneck": 4, "depth": 3},
            "spectra": {"eigenimages": 12},
            "transition_error": "fft",
        }
    )
    ctx = LocalContext(tmp_path / "run", data_dir=tmp_path / "data")
    fit(AutoencoderTrainer(cfg), ctx, LoopConfig(eval_every=30), StopRule(iterations=60))
    last = [m for _, m in ctx.metrics if "val/rank" in m][-1]
    # [64, 4, 64] with a ReLU after the bottleneck: an affine image of at most 4 dimensions
    assert 1 <= last["val/rank"] <= 5
    # beyond the rank the eigenimages are null-space vectors: the frame cannot pass it
    assert 0 <= last["val/transition_frame"] <= last["val/rank"]
    assert 0 <= last["val/spectral_error"] <= 2


def test_an_unknown_transition_error_is_refused_by_name():
    with pytest.raises(ValidationError, match="transition_error"):
        AutoencoderConfig.model_validate({"transition_error": "mse"})
