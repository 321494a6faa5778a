"""P12: subspace sampling's speed — dynsweep's MCLMC beside this machine's limit and the original.

    python -m benchmarks.subspace [--steps 300] [--path-steps 300] [--repeats 3]
        [--original DIR --original-python PYTHON] [--device cpu|cuda]

The cell: energy (537 training points), a Bezier path of order K = 2 through the 3×16 ReLU MLP
(trained here for ``--path-steps`` Adam steps: the rates do not depend on how well), the
``lambda`` space, 10 chains × the 9 temperatures of the original's sweep = 90 chains, float32.
Lines, each the median of ``--repeats`` timings of ``--steps`` steps:

- **dynsweep**: the ``subspace`` trainer's packed MCLMC (``trainers.paths.subspace_packed``):
  90 chains in one batch, the gradient by autograd through the space and the batched MLP.
- **limit**: a minimal hand-written loop doing the same network arithmetic: the 90 chains' MLP
  forward *and backward* written out by hand (matrix products and masks, no autograd) on the
  weights of the chains' current points, plus the product that takes the weight gradient to φ.
  It leaves out the space's map (t, tube → φ) and the integrator's vector updates, so it bounds
  what any implementation of this sampler can reach here.
- **original** (with ``--original``): the original's own JAX code (BlackJAX 1.2.3 MCLMC in
  numpyro's model), run by ``benchmarks/subspace_original.py`` in the original's environment
  (``--original-python``; its docstring says how to make it): one run is one temperature's
  10 chains, as the original's sweep runs them.

Gradient evaluations are counted per chain (a McLachlan step: 2); a draw is 100 of them (the
original's ``num_forward_passes``). Ratios last: dynsweep / limit (goal ≥ 0.8) and dynsweep /
original in the cell's draws per second (goal ≥ 1.0): all 90 chains at once against the
original's runs of 10, one temperature after another. The minutes the whole UCI table would take
at the measured rate are printed too: 5 data sets × 3 spaces × 5 orders × 5 seeds = 375 cells of
90 chains, each 130,000 gradient evaluations a chain (0.3 × 50,000 tuning + 50,000 sampling
steps, 2 evaluations a step), one cell at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine

TEMPERATURES = [1.0, 2.154, 4.642, 10.0, 21.544, 46.416, 100.0, 215.443, 464.159]
CHAINS = 10
GRADS_PER_CELL = 130_000  # a chain's gradient evaluations at the original's budget
CELLS = 375


def trained_path(folder: Path, steps: int, device: str) -> Path:
    from trainers.local import LocalContext
    from trainers.loop import LoopConfig, StopRule, fit
    from trainers.paths.trainer import PathsConfig, PathsTrainer

    cfg = PathsConfig(
        dataset="energy", order=2, depth=3, width=16, t_samples=10, uniform_t=True, lr=0.005
    )
    ctx = LocalContext(folder / "path", device=device)
    fit(PathsTrainer(cfg), ctx, LoopConfig(eval_every=steps), StopRule(iterations=steps))
    model = folder / "model.pt"
    header = {"trainer": "paths", "config": cfg.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": steps, "state": ctx.export}, model)
    return model


def packed_sampler(model: Path, folder: Path, device: str):
    from trainers.local import LocalContext
    from trainers.paths.subspace_packed import PackedSubspaceTrainer
    from trainers.paths.subspace_trainer import SubspaceConfig

    configs = [
        SubspaceConfig(
            path_model=str(model),
            space="lambda",
            prior_scale=0.5,
            sampler="mclmc",
            chains=CHAINS,
            temperature=t,
            warmup=10**6,
            steps_per_draw=1,
        )  # fmt: skip
        for t in TEMPERATURES
    ]
    trainer = PackedSubspaceTrainer(configs, [0] * len(configs))
    trainer.setup(LocalContext(folder / "sub", device=device))
    return trainer


def timed(fns: list, steps: int, repeats: int, sync) -> list[float]:
    """For each of ``fns``, the median over ``repeats`` of the seconds one call takes
    (``steps`` calls each, after 10 warm-up calls); the functions take turns in every repeat,
    so that a machine's changing load falls on all of them alike."""
    for fn in fns:
        for _ in range(10):
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            kept.append((time.perf_counter() - start) / steps)
    return [statistics.median(t) for t in times]


def hand_written(posterior, q: torch.Tensor):
    """The limit's step: the MLP's log-likelihood gradient of every chain by hand."""
    space, layers = posterior.space, posterior.layers
    x, y = posterior.x, posterior.y.flatten()
    coords, log_scale = posterior.split(q)
    flats = space.weights_batch(coords).detach()
    basis = _basis(space, coords)
    inv_t = 1 / posterior.temperature
    sizes = [k for out_f, in_f in layers for k in (out_f * in_f, out_f)]

    def step() -> torch.Tensor:
        pieces = flats.split(sizes, -1)
        ws = [pieces[2 * i].unflatten(-1, layer) for i, layer in enumerate(layers)]
        bs = [pieces[2 * i + 1] for i in range(len(layers))]
        hs, masks = [x.expand(len(flats), -1, -1)], []
        for i in range(len(layers) - 1):
            z = torch.baddbmm(bs[i][:, None], hs[-1], ws[i].mT)
            masks.append(z > 0)
            hs.append(z.clamp_min_(0))
        out = (hs[-1] * ws[-1]).sum(-1) + bs[-1]
        d_out = (y - out) * torch.exp(-2 * log_scale)[:, None] * inv_t[:, None]
        grads = [(d_out[..., None] * hs[-1]).sum(1, keepdim=True), d_out.sum(1, keepdim=True)]
        d_h = d_out[..., None] * ws[-1]
        for i in range(len(layers) - 2, -1, -1):
            d_z = d_h * masks[i]
            grads = [d_z.mT @ hs[i], d_z.sum(1)[:, None]] + grads
            if i:
                d_h = d_z @ ws[i]
        flat = torch.cat([g.flatten(1) for g in grads], 1)
        return flat @ basis.T  # the weight gradient in φ coordinates

    return step


def _basis(space, coords: torch.Tensor) -> torch.Tensor:
    """K×P: the rows that map φ to weights (the space's affine map's linear part)."""
    k = space.phi_batch(coords[:1]).shape[1]
    eye = torch.eye(k, dtype=coords.dtype, device=coords.device)
    return space.to_weights(eye) - space.to_weights(torch.zeros_like(eye))


def original_rate(folder: str, python: str, chains: int = CHAINS) -> dict:
    """The original's rate, from ``benchmarks/subspace_original.py`` run in its environment:
    one temperature's ``chains`` chains (the original runs a temperature per run)."""
    from trainers.paths.data import UCI_DIR

    script = Path(__file__).with_name("subspace_original.py")
    command = [python, str(script), "--original", folder, "--data", str(UCI_DIR / "energy.data")]
    done = subprocess.run(
        [*command, "--chains", str(chains)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--path-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--original", help="a checkout of doldd/Paths-and-Ambient-Spaces")
    parser.add_argument("--original-python", help="the Python of the original's environment")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = args.device
    print(machine(), f"device {device}")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trainer = packed_sampler(trained_path(folder, args.path_steps, device), folder, device)
        chains = CHAINS * len(TEMPERATURES)
        sampler = trainer.mclmc
        limit_fn = hand_written(trainer.posterior, sampler.state["position"])
        step_s, limit_s = timed([sampler.step, limit_fn], args.steps, args.repeats, sync)
        per_step = len(sampler.coefficients) // 2
        ours = chains * per_step / step_s  # chain-gradient evaluations a second
        limit = chains / limit_s
    print(f"dynsweep MCLMC, {chains} chains: {step_s * 1e3:.2f} ms a step ({per_step} grads), "
          f"{ours:,.0f} chain-gradient evaluations/s, {ours / 100:,.1f} draws/s "
          f"({ours / 100 / chains:.2f} a chain)")  # fmt: skip
    print(f"limit (hand-written MLP gradient), {chains} chains: {limit_s * 1e3:.2f} ms, "
          f"{limit:,.0f} chain-gradient evaluations/s")  # fmt: skip
    cell_min = GRADS_PER_CELL * chains / ours / 60
    print(
        f"one cell (90 chains, 130,000 gradient evaluations each): {cell_min:.1f} min; "
        f"the whole table ({CELLS} cells, one at a time): {CELLS * cell_min / 60:.1f} h"
    )
    original = None
    if args.original and args.original_python:
        original = original_rate(args.original, args.original_python)
        print(f"original (JAX {original.get('jax')}, BlackJAX {original.get('blackjax')}), "
              f"{original.get('chains')} chains: {original['draws_per_s']:.2f} draws/s "
              f"({original['draws_per_s'] / original['chains']:.3f} a chain), "
              f"compile {original.get('compile_s', float('nan')):.1f} s")  # fmt: skip
    print(f"ratio dynsweep / limit: {ours / limit:.2f} (goal >= 0.8)")
    if original:  # the cell's draws a second: the original runs its 9 temperatures in turn
        ratio = ours / 100 / original["draws_per_s"]
        print(f"ratio dynsweep / original (the cell's draws/s): {ratio:.2f} (goal >= 1.0)")
    else:
        print("ratio dynsweep / original: not measured (give --original and --original-python)")


if __name__ == "__main__":
    main()
