"""P6: vectorised trial packing — a 256-point path-optimisation grid, packed vs one trial a point.

    python -m benchmarks.packing [--seeds 32] [--steps 200] [--check-seeds 4] [--repeats 3]

The grid: the toy regression, Bezier curves of order 4 through 2×16 MLPs, activation
relu/elu × uniform_t false/true × lr {0.01, 0.02} × ``--seeds`` seeds (32 → 256 points). Both
sweeps go through ``orchestrator.session.SweepSession`` on the same 2-CPU Ray session (timed
from the call of its ``run`` to its return, MLflow runs, metrics, models and the summary
included; the MLflow database is created before): once with ``pack: auto`` (here: 4 Tune
trials of 64 points, two a CPU), once unpacked
(256 trials), in float32, ``--repeats`` times (each repeat measures its own baseline, the order
alternating), the ratio reported per repeat and its median. Equality: the same two sweeps
again in float64 on ``--check-seeds`` seeds (32 points), then every point's final
``val/best_loss`` and whole ``train/loss`` history compared (also for the first float32 pair:
there rounding differences of 1e-7 grow through training).
Goal: ≥ 10 × faster end to end, with equal results (float64: 1e-12).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.common import machine

URI = "sqlite:///mlflow.db"


def grid(seeds: int, steps: int, pack, dtype: str = "float32", name: str = "") -> dict:
    return {
        "name": name or f"pack-{pack}-{dtype}",
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


def timed_sweep(raw: dict) -> float:
    """Seconds from the session's ``run`` to its return (its summary logged, its parent run
    closed on return)."""
    from orchestrator.session import SweepSession
    from orchestrator.spec import load_spec

    spec = load_spec(raw=raw)
    start = time.perf_counter()
    SweepSession(spec, show=lambda text: None).run()
    wall = time.perf_counter() - start
    return wall


def final_values(experiment: str) -> dict[tuple, tuple[float, list[float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(URI)
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


def difference(packed: str, plain: str) -> tuple[int, float, float]:
    a, b = final_values(packed), final_values(plain)
    assert a.keys() == b.keys(), "the two sweeps ran different points"
    best = max(abs(a[k][0] - b[k][0]) for k in b)
    history = max(abs(x - y) for k in b for x, y in zip(a[k][1], b[k][1], strict=True))
    return len(b), best, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--check-seeds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray
    from mlflow.tracking import MlflowClient

    print(machine())
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    points = args.seeds * 8
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        MlflowClient(URI).search_experiments()  # the database, created before any timing
        for r in range(args.repeats):
            walls = {}
            for pack in ("auto", 1) if r % 2 == 0 else (1, "auto"):
                name = f"pack-{pack}-float32-{r}"
                walls[pack] = timed_sweep(grid(args.seeds, args.steps, pack, name=name))
                load = os.getloadavg()[0]
                print(f"repeat {r + 1}, pack: {pack}: {walls[pack]:.1f} s (load {load:.1f})")
            ratios.append(walls[1] / walls["auto"])
            print(
                f"repeat {r + 1}: unpacked ({points} trials) {walls[1]:.1f} s, packed (pack: "
                f"auto) {walls['auto']:.1f} s: {ratios[-1]:.1f}×",
                flush=True,
            )
        for pack in ("auto", 1):
            timed_sweep(grid(args.check_seeds, args.steps, pack, "float64"))
        diffs = {
            "float64": difference("pack-auto-float64", "pack-1-float64"),
            "float32": difference("pack-auto-float32-0", "pack-1-float32-0"),
        }
    print(f"{points} points × {args.steps} steps on 2 CPUs, float32")
    for dtype, (n, best, history) in diffs.items():
        print(
            f"{dtype}, {n} points: largest difference packed vs unpacked: "
            f"val/best_loss {best:.1e}, train/loss history {history:.1e}"
        )
    print(", ".join(f"{x:.1f}×" for x in ratios))
    median = statistics.median(ratios)
    print(
        f"ratio unpacked/packed = {median:.1f}× (median of {len(ratios)}; goal >= 10; "
        "float64 difference <= 1e-12)"
    )


if __name__ == "__main__":
    main()
