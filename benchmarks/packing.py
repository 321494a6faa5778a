"""P6: vectorised trial packing — a 256-point path-optimisation grid, packed vs one trial a point.

    python -m benchmarks.packing [--seeds 32] [--steps 200] [--check-seeds 4]

The grid: the toy regression, Bezier curves of order 4 through 2×16 MLPs, activation
relu/elu × uniform_t false/true × lr {0.01, 0.02} × ``--seeds`` seeds (32 → 256 points). Both
sweeps go through ``orchestrator.sweep.run`` on the same 2-CPU Ray session (timed from the call
to its return, MLflow runs, metrics and models included): once with ``pack: auto`` (here: 2
Tune trials of 128 points, one per activation), once unpacked (256 trials), in float32.
Equality: the same two sweeps again in float64 on ``--check-seeds`` seeds (32 points), then
every point's final ``val/best_loss`` and whole ``train/loss`` history compared (in float32,
rounding differences of 1e-7 grow through training; that difference is printed too).
Goal: ≥ 10 × faster end to end, with equal results (1e-5).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import machine


def grid(seeds: int, steps: int, pack, dtype: str = "float32") -> dict:
    return {
        "name": f"pack-{pack}-{dtype}",
        "trainer": "paths",
        "config": {
            "order": 4,
            "width": 16,
            "depth": 2,
            "activation": {"grid": ["relu", "elu"]},
            "uniform_t": {"grid": [False, True]},
            "lr": {"grid": [0.01, 0.02]},
            "t_samples": 8,
            "dtype": dtype,
        },
        "seed": {"grid": list(range(seeds))},
        "pack": pack,
        "metric": "val/best_loss",
        "mode": "min",
        "stop": {"iterations": steps},
        "loop": {"report_every": 50, "eval_every": 50, "checkpoint_every": steps},
        "resources": {"cpus": 1},
    }


def final_values(experiment: str) -> dict[tuple, tuple[float, list[float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient("sqlite:///mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        if "mlflow.parentRunId" not in run.data.tags:
            continue  # the sweep's parent run
        p = run.data.params
        key = tuple(p[k] for k in ("config.activation", "config.uniform_t", "config.lr", "seed"))
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        out[key] = (
            run.data.metrics["val/best_loss"],
            [m.value for m in sorted(losses, key=lambda m: m.step)],
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--check-seeds", type=int, default=4)
    args = parser.parse_args()
    import ray

    from orchestrator import sweep
    from orchestrator.spec import load_spec

    print(machine())
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for dtype, seeds in (("float32", args.seeds), ("float64", args.check_seeds)):
            for pack in ("auto", 1):
                spec = load_spec(raw=grid(seeds, args.steps, pack, dtype))
                start = time.perf_counter()
                outcome = sweep.run(spec)
                walls[pack, dtype] = time.perf_counter() - start
                sweep.finish(outcome)
                print(f"pack: {pack}, {dtype}: {walls[pack, dtype]:.1f} s", flush=True)
        diffs = {dtype: difference(dtype) for dtype in ("float32", "float64")}
    print(f"{args.seeds * 8} points × {args.steps} steps on 2 CPUs, float32")
    print(f"unpacked ({args.seeds * 8} trials): {walls[1, 'float32']:.1f} s")
    print(f"packed (pack: auto):        {walls['auto', 'float32']:.1f} s")
    for dtype, (points, best, history) in diffs.items():
        print(
            f"{dtype}, {points} points: largest difference packed vs unpacked: "
            f"val/best_loss {best:.1e}, train/loss history {history:.1e}"
        )
    ratio = walls[1, "float32"] / walls["auto", "float32"]
    print(f"ratio unpacked/packed = {ratio:.1f}  (goal: >= 10; float64 difference <= 1e-5)")


def difference(dtype: str) -> tuple[int, float, float]:
    packed, plain = final_values(f"pack-auto-{dtype}"), final_values(f"pack-1-{dtype}")
    assert packed.keys() == plain.keys(), "the two sweeps ran different points"
    best = max(abs(packed[k][0] - plain[k][0]) for k in plain)
    history = max(abs(a - b) for k in plain for a, b in zip(packed[k][1], plain[k][1], strict=True))
    return len(plain), best, history


if __name__ == "__main__":
    main()
