"""P7: convergent cross mapping over all pairs of 100 series × T = 1000 — dynsweep vs pyEDM.

    python -m benchmarks.edm [--series 100] [--length 1000] [--timed-pairs 20]

The series: 100 logistic maps, each driven by its predecessor (a chain, so causal pairs
exist). dynsweep: :func:`analysis.ccm.cross_map`, every ordered pair at once. The baseline: a
plain loop of ``pyEDM.CCM(parallel=False)`` calls, one per unordered pair (pyEDM's own process
pool per call is far slower here: 239 s vs 12 s for 200 pairs). The baseline is timed on
``--timed-pairs`` random pairs and scaled to all n(n−1)/2 pairs (a full run would take hours);
those pairs are also compared value by value with dynsweep's result. Goal: ≥ 20 × faster
with identical rho (1e-6).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine


def chain(n: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, length))
    x[:, 0] = rng.uniform(0.2, 0.8, n)
    r = rng.uniform(3.6, 3.9, n)
    for t in range(length - 1):
        drive = np.concatenate([[0.0], x[:-1, t]])
        x[:, t + 1] = x[:, t] * (r - r * x[:, t] - 0.2 * drive)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--E", type=int, default=3)
    parser.add_argument("--lib-sizes", default="20,100,300,600,900")
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--timed-pairs", type=int, default=20)
    args = parser.parse_args()
    import pandas as pd
    import pyEDM

    from analysis.ccm import cross_map

    print(machine())
    sizes = [int(s) for s in args.lib_sizes.split(",")]
    data = chain(args.series, args.length)
    n = args.series
    start = time.perf_counter()
    skill = cross_map(data, args.E, sizes, sample=args.sample, seed=1)
    ours = time.perf_counter() - start

    names = [f"s{i}" for i in range(n)]
    frame = pd.DataFrame({"Time": np.arange(1, args.length + 1), **dict(zip(names, data))})
    rng = np.random.default_rng(0)
    pairs = set()
    while len(pairs) < args.timed_pairs:
        i, j = sorted(rng.choice(n, 2, replace=False))
        pairs.add((int(i), int(j)))
    worst = 0.0
    start = time.perf_counter()
    for i, j in sorted(pairs):
        ref = pyEDM.CCM(
            dataFrame=frame,
            columns=names[i],
            target=names[j],
            libSizes=sizes,
            sample=args.sample,
            E=args.E,
            seed=1,
            parallel=False,
        )
        worst = max(
            worst,
            np.abs(skill[i, j] - ref[f"{names[i]}:{names[j]}"].to_numpy()).max(),
            np.abs(skill[j, i] - ref[f"{names[j]}:{names[i]}"].to_numpy()).max(),
        )
    per_pair = (time.perf_counter() - start) / len(pairs)
    all_pairs = n * (n - 1) // 2
    baseline = per_pair * all_pairs
    print(
        f"{n} series × T = {args.length}, E = {args.E}, libSizes {sizes}, sample {args.sample}: "
        f"{all_pairs} pairs, both directions"
    )
    print(f"dynsweep cross_map (all pairs): {ours:.1f} s")
    print(
        f"pyEDM.CCM plain loop: {per_pair:.3f} s a pair on {len(pairs)} timed pairs "
        f"→ {baseline:.0f} s for all pairs (scaled)"
    )
    print(f"largest |rho difference| on the timed pairs: {worst:.1e}  (goal: <= 1e-6)")
    print(f"ratio pyEDM/dynsweep = {baseline / ours:.0f}  (goal: >= 20)")


if __name__ == "__main__":
    main()
