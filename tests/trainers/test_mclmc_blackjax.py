"""MCLMC's kernel step against BlackJAX 1.2.3, the original's pin (issue 26, part 3).

BlackJAX 1.2.3 (``with_isokinetic_maruyama``) refreshes the momentum with ε/2, makes the
deterministic isokinetic McLachlan step, and refreshes again with ε/2; ≤ 1.2.1 refreshed once,
with ε, after the step (``refresh="after"`` here). The reference values are BlackJAX's own
kernel in float64 with fixed keys, and the normal draws those keys give, printed by
    /work/orig/venv/bin/python tests/trainers/reference/mclmc_blackjax.py
(jax 0.4.30, blackjax 1.2.3). The draws reach the sampler through ``MCLMC._noise`` in the
order the kernel makes them: the first refresh's, then the second's.
"""

from __future__ import annotations

import pytest
import torch

from tests.trainers.reference.mclmc_blackjax import (
    MOMENTUM,
    POSITION,
    PRECISION,
    QUARTIC,
    STEP_SIZE,
    TILT,
    L,
    unit,
)
from trainers.paths.mclmc import MCLMC

SPLIT_NOISE_BEFORE = [
    [
        [-1.7274724223950653, 1.3154968059151477, 0.6112819920511415],
        [-0.6196448796437874, -0.8763240702921069, 0.19011867068617666],
    ],
    [
        [-0.626710129651145, 0.4780094699856668, -0.5460646623899336],
        [0.7583300742389608, 1.7396939866038108, 1.0915813985401894],
    ],
    [
        [-0.12900683468069002, -0.44942711761810866, -2.2689925189659177],
        [-0.4495081124498255, 0.1890317516159916, -1.0086690411222334],
    ],
]
SPLIT_NOISE_AFTER = [
    [
        [0.09515449082493038, -0.1913317232187246, 0.7572969758849853],
        [-0.09522623476255097, 1.7953739831420619, 0.6341060715374387],
    ],
    [
        [0.7819175883025916, -1.471796183776997, -0.19053594877836497],
        [1.5258226195480988, -0.9570838637159669, -0.6012980978967409],
    ],
    [
        [1.1301341654461923, -2.1007864009324564, 0.11561775519515803],
        [0.588347413924384, 0.41666088508235993, -1.7025563574395126],
    ],
]
SPLIT_POSITION = [
    [
        [0.3294434632770183, -0.6205583052991426, 1.4903767963605794],
        [-1.2827114760189309, 0.5962933544167804, 0.3276955414173117],
    ],
    [
        [0.3212564237984343, -0.455078001469004, 1.8537038404980564],
        [-1.2073952371734848, 0.8066642590886353, 0.4346836174851547],
    ],
    [
        [0.6588968642536115, -0.6553833655294621, 1.8861945581800341],
        [-0.987513400187234, 0.903286313580812, 0.3682434278389576],
    ],
]
SPLIT_MOMENTUM = [
    [
        [0.14912592533809435, 0.13329661985090474, 0.9797925645402605],
        [-0.10924543713187558, 0.8890553950692826, 0.44457388470766857],
    ],
    [
        [0.36716653796781185, -0.030619985044179225, 0.9296510904165205],
        [0.9076018182992266, 0.3976284723188104, 0.13472393039600147],
    ],
    [
        [0.6989565071543644, -0.7099504974365831, -0.08619798313254841],
        [0.7546489563025908, 0.2789350866886404, -0.5938856541165236],
    ],
]
SPLIT_LOGDENSITY = [
    [-0.6814672479589384, -2.6456745933167714],
    [-1.5280689512307726, -2.6469610099083476],
    [-1.411219039530704, -2.088345860770655],
]
SPLIT_ENERGY_CHANGE = [
    [-0.000740056582845039, -0.000725313880557632],
    [-0.0008909216875735426, -1.8827473388327576e-05],
    [0.0002839716839544426, 0.000522539055243687],
]
AFTER_NOISE = [
    [-0.49586304018863275, -1.358306226272846, 0.2678672038341031],
    [-0.29044689256386047, -0.5593478594405072, -1.1944284306988016],
]
AFTER_POSITION = [
    [0.5727066532661955, -0.8154882725929079, 1.3675151586570273],
    [-1.2012499250947206, 0.634114759009768, 0.2819164334997112],
]
AFTER_MOMENTUM = [
    [0.3685260118767227, -0.7522871710989159, 0.5461250687985565],
    [0.0529834353843218, 0.8736160522149531, -0.4837228017028304],
]
AFTER_LOGDENSITY = [-0.4083392865931582, -2.360163573719594]
AFTER_ENERGY_CHANGE = [-0.00042118145902025894, -0.00031665833753802275]

TOL = 1e-10


def log_density(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's −½ xᵀPx − ¼ Σ cᵢxᵢ⁴ + b·x and its gradient, C×3 ↦ (C, C×3)."""
    p, c, b = (torch.tensor(v, dtype=torch.float64) for v in (PRECISION, QUARTIC, TILT))
    logp = -0.5 * ((x @ p) * x).sum(-1) - 0.25 * (c * x**4).sum(-1) + x @ b
    return logp, -x @ p - c * x**3 + b


def sampler(draws: list, **options) -> MCLMC:
    """Two chains at the reference's state, with the given normal draws (each 2×3) fed through
    ``_noise`` in order."""
    start = torch.tensor(POSITION, dtype=torch.float64)
    chain = MCLMC(log_density, start, tune_steps=100, seed=0, **options)
    logp, grad = log_density(start)
    momentum = torch.from_numpy(unit(MOMENTUM))
    chain.state = {"position": start, "momentum": momentum, "logdensity": logp, "grad": grad}
    chain.step_size = torch.tensor(STEP_SIZE, dtype=torch.float64)
    chain.L = torch.tensor(L, dtype=torch.float64)
    feed = iter(torch.tensor(z, dtype=torch.float64) for z in draws)

    def noise(shape):
        assert tuple(shape) == (2, 3)
        return next(feed)

    chain._noise = noise
    chain.left = feed  # what was not drawn
    return chain


def close(actual: torch.Tensor, expected) -> bool:
    return torch.allclose(actual, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=TOL)


def check(new: dict, energy_change: torch.Tensor, step: int) -> None:
    assert close(new["position"], SPLIT_POSITION[step])
    assert close(new["momentum"], SPLIT_MOMENTUM[step])
    assert close(new["logdensity"], SPLIT_LOGDENSITY[step])
    assert close(energy_change, SPLIT_ENERGY_CHANGE[step])


def test_one_step_by_default_is_blackjax_1_2_3s_kernel():
    chain = sampler([SPLIT_NOISE_BEFORE[0], SPLIT_NOISE_AFTER[0]])  # the default refresh
    new, energy_change = chain.transition()
    check(new, energy_change, 0)
    assert next(chain.left, None) is None  # two draws a step


def test_three_split_steps_in_a_row_match_blackjax_1_2_3():
    draws = [z for step in zip(SPLIT_NOISE_BEFORE, SPLIT_NOISE_AFTER) for z in step]
    chain = sampler(draws, refresh="split")
    for step in range(3):
        new, energy_change = chain.transition()
        check(new, energy_change, step)
        chain.state = new
    assert next(chain.left, None) is None


def test_the_draws_order_matters():
    """Swapping the two refreshes' draws moves the step off the reference."""
    chain = sampler([SPLIT_NOISE_AFTER[0], SPLIT_NOISE_BEFORE[0]], refresh="split")
    new, _ = chain.transition()
    assert not close(new["position"], SPLIT_POSITION[0])


def test_after_refreshes_once_with_the_whole_step_as_blackjax_1_2_1():
    chain = sampler([AFTER_NOISE], refresh="after")
    new, energy_change = chain.transition()
    assert close(new["position"], AFTER_POSITION)
    assert close(new["momentum"], AFTER_MOMENTUM)
    assert close(new["logdensity"], AFTER_LOGDENSITY)
    assert close(energy_change, AFTER_ENERGY_CHANGE)
    assert next(chain.left, None) is None


def test_bad_refresh_names_the_field():
    with pytest.raises(ValueError, match="refresh"):
        MCLMC(log_density, torch.tensor(POSITION, dtype=torch.float64), 100, refresh="before")
