"""Reference MCLMC steps from BlackJAX 1.2.3 (the original's pin), for
``tests/trainers/test_mclmc_blackjax.py``.

For a fixed case (d = 3, a correlated Gaussian with a quartic term and a linear tilt, two
chains with their own position, unit momentum, step size and L) this runs BlackJAX's own kernel,
``blackjax.mcmc.mclmc.build_kernel(logdensity_fn, sqrt_diag_cov=1.0,
integrator=isokinetic_mclachlan)``, in float64 with fixed keys: one step, and three steps in a
row. A 1.2.3 kernel step (``with_isokinetic_maruyama``) splits its key into (key1, key2),
refreshes the momentum with ε/2 and key1, makes the deterministic isokinetic McLachlan step,
and refreshes again with ε/2 and key2. The script recomputes the normal draws those keys give
(``jax.random.normal(key, (d,), float64)``, as ``partially_refresh_momentum`` draws them), so
that the test can feed them to dynsweep's sampler, and prints everything as Python constants.

It also prints a step of the ≤ 1.2.1 scheme (the deterministic step, then one refresh with ε
and the step's key), assembled from 1.2.3's own ``isokinetic_mclachlan`` and
``partially_refresh_momentum``.

Run with the original's environment (jax 0.4.30, blackjax 1.2.3):
    /work/orig/venv/bin/python tests/trainers/reference/mclmc_blackjax.py
"""

from __future__ import annotations

import numpy as np

PRECISION = [[2.0, 0.6, -0.3], [0.6, 1.5, 0.4], [-0.3, 0.4, 1.0]]
QUARTIC = [0.3, 0.1, 0.2]
TILT = [0.5, -0.2, 0.1]
POSITION = [[0.3, -0.7, 1.1], [-1.2, 0.4, 0.2]]
MOMENTUM = [[0.6, -0.3, 0.74], [-0.2, 0.9, 0.35]]  # normalised before use
STEP_SIZE = [0.4, 0.25]
L = [1.3, 0.8]
SEEDS = [7, 11]  # one PRNGKey per chain
STEPS = 3


def unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


if __name__ == "__main__":
    import jax

    jax.config.update("jax_enable_x64", True)
    import blackjax
    import jax.numpy as jnp
    from blackjax.mcmc.integrators import (
        IntegratorState,
        isokinetic_mclachlan,
        partially_refresh_momentum,
    )

    precision, quartic, tilt = (
        jnp.asarray(v, dtype=jnp.float64) for v in (PRECISION, QUARTIC, TILT)
    )

    def logdensity_fn(x):
        return -0.5 * x @ precision @ x - 0.25 * jnp.sum(quartic * x**4) + tilt @ x

    kernel = blackjax.mcmc.mclmc.build_kernel(
        logdensity_fn=logdensity_fn, sqrt_diag_cov=1.0, integrator=isokinetic_mclachlan
    )
    deterministic = isokinetic_mclachlan(logdensity_fn=logdensity_fn, sqrt_diag_cov=1.0)
    momenta = unit(MOMENTUM)

    def start(c: int) -> IntegratorState:
        x = jnp.asarray(POSITION[c], dtype=jnp.float64)
        logp, grad = jax.value_and_grad(logdensity_fn)(x)
        return IntegratorState(x, jnp.asarray(momenta[c]), logp, grad)

    def normal(key):
        return jax.random.normal(key, shape=(3,), dtype=jnp.float64)

    out: dict[str, list] = {}
    # "split" (1.2.3's kernel): STEPS steps, keys split from each chain's PRNGKey(seed)
    for c in range(2):
        state = start(c)
        for s, key in enumerate(jax.random.split(jax.random.PRNGKey(SEEDS[c]), STEPS)):
            key1, key2 = jax.random.split(key)
            # the kernel step, and the same step assembled by hand as described above
            by_hand = init_c = state
            by_hand = by_hand._replace(
                momentum=partially_refresh_momentum(
                    by_hand.momentum, key1, 0.5 * STEP_SIZE[c], L[c]
                )
            )
            by_hand, kinetic = deterministic(by_hand, STEP_SIZE[c])
            by_hand = by_hand._replace(
                momentum=partially_refresh_momentum(
                    by_hand.momentum, key2, 0.5 * STEP_SIZE[c], L[c]
                )
            )
            state, info = kernel(key, state, L[c], STEP_SIZE[c])
            for a, b in zip(by_hand, state, strict=True):
                assert np.allclose(a, b, rtol=0, atol=1e-14), "not refresh(ε/2), step, refresh(ε/2)"
            assert np.isclose(info.kinetic_change, kinetic, rtol=0, atol=1e-14)
            assert np.isclose(
                info.energy_change,
                kinetic - state.logdensity + init_c.logdensity,
                rtol=0,
                atol=1e-14,
            ), "energy change is not ΔK − Δlog p of the deterministic step"
            row = {
                "noise_before": normal(key1),
                "noise_after": normal(key2),
                "position": state.position,
                "momentum": state.momentum,
                "logdensity": state.logdensity,
                "energy_change": info.energy_change,
                "kinetic_change": info.kinetic_change,
            }
            for name, value in row.items():
                out.setdefault(f"split_{name}", [[None, None] for _ in range(STEPS)])
                out[f"split_{name}"][s][c] = np.asarray(value).tolist()
    # "after" (≤ 1.2.1): the deterministic step, then one refresh with ε; one step
    for c in range(2):
        key = jax.random.split(jax.random.PRNGKey(SEEDS[c]), STEPS)[0]
        init = start(c)
        state, kinetic = deterministic(init, STEP_SIZE[c])
        u = partially_refresh_momentum(state.momentum, key, STEP_SIZE[c], L[c])
        row = {
            "noise": normal(key),
            "position": state.position,
            "momentum": u,
            "logdensity": state.logdensity,
            "energy_change": kinetic - state.logdensity + init.logdensity,
        }
        for name, value in row.items():
            out.setdefault(f"after_{name}", [None, None])[c] = np.asarray(value).tolist()

    print(f"# jax {jax.__version__}, blackjax {blackjax.__version__}")
    for name, value in out.items():
        print(f"{name.upper()} = {value!r}")
