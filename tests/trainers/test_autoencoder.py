"""The autoencoder trainer and the spectra it follows."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.autoencoder import spectra
from trainers.autoencoder.model import layer_sizes
from trainers.autoencoder.spectra import SpectraConfig
from trainers.autoencoder.trainer import AutoencoderConfig, AutoencoderTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import RecordSpec
from trainers.trajectory import read_trajectory


def cosine(n: int, fy: int, fx: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y + fx * x) / n)


def test_ring_integrals_put_a_known_spectrum_on_its_ring():
    cfg = SpectraConfig(p=2)
    masks = spectra.ring_masks((16, 16), cfg)
    images = torch.stack([torch.ones(16, 16), cosine(16, 0, 3)])
    u = spectra.ring_integrals(spectra.centred_fft(images), masks)
    assert u.shape == (2, len(masks)) and len(masks) == 8  # radii 1..8
    expected = torch.zeros_like(u)
    # |F| / H is 16 at the zero frequency (ring 1: four frequencies), 8 at ±3 cycles; rings
    # are centred on the pixel grid, half a pixel from the zero frequency, so +3 (3.54 away)
    # lies on ring 4 and −3 (2.55 away) on ring 3. u is the mean of |F| / H over each ring.
    expected[0, 0] = 16 / masks[0].sum()
    expected[1, 2], expected[1, 3] = 8 / masks[2].sum(), 8 / masks[3].sum()
    assert torch.allclose(u, expected, atol=1e-5)


def test_ring_norm_changes_which_ring_a_diagonal_frequency_lies_on():
    image = cosine(16, 3, 3)[None]  # peaks 3.5 and 2.5 away from the grid centre on each axis
    for p, rings in [(math.inf, {2, 3, 4}), (1, {5, 7}), (2, {4, 5}), (0.5, {10, 14})]:
        cfg = SpectraConfig(p=p, radius_mult=2)
        u = spectra.ring_integrals(spectra.centred_fft(image), spectra.ring_masks((16, 16), cfg))
        radii = spectra.ring_radii((16, 16), cfg)  # empty rings (small radii, p < 1) left out
        assert {int(radii[i]) for i in (u[0] > 1e-3).nonzero()} == rings, p


def test_eigenimages_recover_planted_patterns_in_order():
    a = cosine(8, 0, 1) / cosine(8, 0, 1).norm()
    b = cosine(8, 2, 0) / cosine(8, 2, 0).norm()
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(200, 2, generator=gen))  # orthonormal columns
    coeff = q * torch.tensor([3.0, 1.0])  # so XᵀX = diag(9, 1) in the pattern basis
    x = (coeff[:, :1, None] * a + coeff[:, 1:, None] * b).unsqueeze(1)
    eig = spectra.eigenimages(x, 2)
    assert abs(float((eig[0] * a).sum())) == pytest.approx(1, abs=1e-4)
    assert abs(float((eig[1] * b).sum())) == pytest.approx(1, abs=1e-4)


def test_transition_frame_and_power_iteration():
    assert spectra.transition_frame(torch.tensor([0.1, 0.2, 0.7, 0.1]), 0.5) == 2
    assert spectra.transition_frame(torch.tensor([0.1, 0.2]), 0.5) == 2
    w = torch.randn(20, 12, generator=torch.Generator().manual_seed(1))
    v = torch.nn.functional.normalize(torch.ones(12), dim=0)
    for _ in range(30):
        sigma, v = spectra.spectral_norm(w, v)
    assert sigma == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-4)


def test_mlp_layer_sizes_have_depth_entries():
    assert layer_sizes(64, 8, 4) == [64, 8, 8, 64]
    assert layer_sizes(64, 8, 3) == [64, 8, 64]
    assert layer_sizes(784, 16, 6) == [784, 400, 16, 16, 400, 784]


@pytest.mark.parametrize("kind", ["mlp", pytest.param("conv", marks=pytest.mark.slow)])
def test_training_lowers_the_loss_and_records_the_spectral_field(tmp_path, kind):
    cfg = AutoencoderConfig.model_validate(
        {
            "model": {"kind": kind, "bottleneck": 8},
            "spectral_lambda": 1.0,
            "spectra": {"eigenimages": 10},
        }
    )
    ctx = LocalContext(tmp_path / kind, data_dir=tmp_path / "data")
    loop = LoopConfig(
        eval_every=40,
        record=(RecordSpec(probe="spectrum", every=40), RecordSpec(probe="layer_norms", every=40)),
    )
    fit(AutoencoderTrainer(cfg), ctx, loop, StopRule(iterations=120))
    vals = [m["val/loss"] for _, m in ctx.metrics if "val/loss" in m]
    assert vals[-1] < 0.5 * vals[0]
    last = ctx.metrics[-1][1]
    assert 0 <= last["val/transition_frame"] <= 10 and last["val/spectral_error"] >= 0
    field = read_trajectory(ctx.trajectory_dir / "spectrum")
    rings = len(spectra.ring_masks((8, 8), cfg.spectra))
    assert list(field.steps) == [0, 40, 80, 120]
    assert field.values.shape == (4, 10 * rings)  # u(j, r) row-major per recorded step
    sizes = AutoencoderTrainer.probe_sizes(cfg)
    assert sizes["spectrum"] == {"spectrum": 10 * rings}
    assert read_trajectory(ctx.trajectory_dir / "layer_norms").values.shape[1] == len(
        sizes["layer_norms"]
    )
    assert list((tmp_path / "data" / "spectra").glob("digits-*.pt"))  # the dataset's, cached


def test_spectra_defaults_follow_the_dataset_and_yield_to_the_config():
    assert AutoencoderConfig().spectra.eigenimages == 32
    assert AutoencoderConfig(dataset="mnist").spectra.eigenimages == 64
    cfg = AutoencoderConfig.model_validate({"dataset": "mnist", "spectra": {"p": 1}})
    assert cfg.spectra.eigenimages == 64 and cfg.spectra.p == 1
