"""The autoencoder study against Zhu et al.'s code, re-implemented here in numpy.

References (``yyexela/dataset_dynamics``): ``src/models.py`` (``AE``: the layer sizes and
where the ReLUs go) and ``src/helpers.py`` (``fft2d``, ``create_p_norm_full``,
``create_p_norm_mask``, ``calculate_integrals``), as ``scripts/AE_fft.py`` calls them
(``fft_pos_freq=False``, ``fft_normalize=True``, ``fft_centering=True``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from trainers.autoencoder import spectra
from trainers.autoencoder.model import Autoencoder, AutoencoderModel, layer_sizes
from trainers.autoencoder.spectra import SpectraConfig


def original_sizes(in_dim: int, bottleneck_dim: int, depth: int) -> list[int]:
    """``AE.__init__``'s size list, verbatim."""
    sizes = list()
    if depth == 2:
        sizes.extend([in_dim, in_dim])
    elif depth % 2 == 0:
        sizes.extend(np.linspace(in_dim, bottleneck_dim, depth // 2, dtype=int).tolist())
        sizes.extend(np.linspace(bottleneck_dim, in_dim, depth // 2, dtype=int).tolist())
    else:
        sizes.extend(np.linspace(in_dim, bottleneck_dim, depth // 2 + 1, dtype=int).tolist())
        sizes.extend(np.linspace(bottleneck_dim, in_dim, depth // 2 + 1, dtype=int).tolist()[1:])
    return sizes


@pytest.mark.parametrize("inputs", [64, 784])
def test_layer_sizes_follow_the_originals_rule(inputs):
    for bottleneck in (2, 4, 8, 16, 49):
        for depth in range(2, 9):
            assert layer_sizes(inputs, bottleneck, depth) == original_sizes(
                inputs, bottleneck, depth
            ), (bottleneck, depth)
    assert layer_sizes(784, 16, 3) == [784, 16, 784]
    assert layer_sizes(784, 16, 4) == [784, 16, 16, 784]
    assert layer_sizes(784, 16, 5) == [784, 400, 16, 400, 784]


def test_relu_after_every_layer_but_the_last_and_no_two_depths_alike():
    params = set()
    for depth in (3, 4, 5, 6):
        model = Autoencoder(AutoencoderModel(bottleneck=4, depth=depth), (1, 8, 8))
        layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.ReLU)]
        kinds = [type(m) for m in layers]
        assert kinds == [nn.Linear, nn.ReLU] * (depth - 2) + [nn.Linear], depth
        widths = [layers[0].in_features] + [m.out_features for m in layers if type(m) is nn.Linear]
        assert widths == original_sizes(64, 4, depth)
        params.add(sum(p.numel() for p in model.parameters()))
    assert len(params) == 4  # depth 4 and 5 no longer build the same network


def original_fft2d(zz: np.ndarray) -> np.ndarray:
    """``fft2d(zz, pos_freq=False, normalize=True, centering=True)``."""
    zzf = scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(zz)))
    zzf = np.abs(zzf)
    return zzf / zzf.shape[0]


def original_p_norm_mask(shape, p, radius, smoothing):
    center_col, center_row = shape[0] / 2.0 - 0.5, shape[1] / 2.0 - 0.5
    x = np.arange(0, shape[0])
    y = np.arange(0, shape[1])
    yy, xx = np.meshgrid(x, y, indexing="xy")
    xx = np.abs(center_row - xx.T)
    yy = np.abs(center_col - yy.T)
    dist = np.linalg.norm(np.stack([xx, yy]), ord=p, axis=0)
    return (dist >= radius - smoothing).astype(int) * (dist <= radius + smoothing).astype(int)


def original_integrals(data: np.ndarray, p, smoothing, radius_mult=1) -> list[float]:
    """``calculate_integrals``: the mean of ``data`` over each non-empty ring."""
    ints = []
    for rx in range(1, int(radius_mult * data.shape[0] // 2 + 1)):
        mask = original_p_norm_mask(data.shape, p, rx, smoothing)
        if np.sum(mask) != 0:
            ints.append(np.sum(data * mask) / np.sum(mask))
    return ints


@pytest.mark.parametrize(
    "size, p, smoothing, radius_mult",
    [(8, 2.0, 0.5, 1.0), (9, 2.0, 1.0, 1.0), (8, 1.0, 0.5, 1.0), (12, 0.318, 8.0, 4.0)],
)
def test_ring_field_equals_the_originals_integrals(size, p, smoothing, radius_mult):
    x = torch.rand(40, 1, size, size, generator=torch.Generator().manual_seed(size))
    x = x.double()
    cfg = SpectraConfig(eigenimages=6, p=p, half_width=smoothing, radius_mult=radius_mult)
    got = spectra.field(x, cfg, spectra.ring_masks((size, size), cfg)).numpy()

    _, _, vh = np.linalg.svd(x.reshape(40, -1).numpy(), full_matrices=False)
    want = np.stack(
        [
            original_integrals(original_fft2d(v.reshape(size, size)), p, smoothing, radius_mult)
            for v in vh[:6]
        ]
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_ring_holds_the_mean_of_its_frequencies_around_the_grid_centre():
    image = torch.ones(1, 16, 16, dtype=torch.float64)
    masks = spectra.ring_masks((16, 16), SpectraConfig(p=2))
    u = spectra.ring_integrals(spectra.centred_fft(image), masks)[0]
    # |F| / H: 256 / 16 at the zero frequency, which lies 0.71 from the grid centre (7.5, 7.5):
    # ring 1 holds the four central frequencies, so its mean is 16 / 4.
    assert masks[0].sum() == 4 and float(u[0]) == pytest.approx(4.0)
    assert float(u[1:].abs().max()) < 1e-12
