"""P1: training speed while recording ALL weights every step, against baselines run alongside.

    python -m benchmarks.recording [--steps 600] [--repeats 3]

(a) a plain PyTorch loop: the 784-256-256-10 MLP on synthetic 28×28 data, batch 128;
(b) the same trainer through dynsweep's loop recording all weights (269,322 floats, 1.08 MB)
    every step — b1 to local disk only, b2 also logging every chunk and every metric to a real
    MLflow sqlite store (what a trial does); b3 records a seeded random projection of all
    weights to 4,096 dimensions instead (``project: 4096``);
(c) the seed study's way: the plain loop writing every weight tensor to HDF5 after each step.
Rates are steps/s over the training steps (set-up excluded), best of N interleaved repeats.
Goal: b ≥ 0.95 × a and b ≥ 5 × c. The ratio line is printed last.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.common import MLP, SyntheticTrainer, Timer, machine, plain_loop
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import RecordSpec


def loop(spec: RecordSpec) -> LoopConfig:
    return LoopConfig(eval_every=10**9, report_every=50, checkpoint_every=10**9, record=(spec,))


ALL = RecordSpec(probe="weights")
PROJECTED = RecordSpec(probe="weights", project=4096)


def plain(steps: int, h5_path: Path | None = None) -> float:
    if h5_path is None:
        return plain_loop(steps)
    import h5py

    with h5py.File(h5_path, "w") as h5:

        def write(step, model, loss):  # the seed study: every weight tensor, every step
            group = h5.create_group(f"step{step}")
            for name, p in model.named_parameters():
                group.create_dataset(name, data=p.detach().numpy())

        return plain_loop(steps, write)


class TimedContext(LocalContext):
    """Times from the first logged step (after set-up) to the end of training."""

    def log_metrics(self, step, metrics):
        if step == 0:
            self.timer = Timer().__enter__()
        super().log_metrics(step, metrics)

    def finish(self, result, checkpoint, export):
        self.timer.__exit__()
        super().finish(result, checkpoint, export)


class MlflowContext(TimedContext):
    """Like a trial: metrics and trajectory chunks go to a real MLflow store."""

    def __init__(self, workdir: Path, run) -> None:
        super().__init__(workdir)
        self.run = run

    @property
    def trajectory_dir(self):
        return self.run.local_artifact_dir("trajectories") or self.workdir / "trajectories"

    def log_metrics(self, step, metrics):
        super().log_metrics(step, metrics)
        self.run.log_metrics(step, metrics)

    def report(self, step, metrics, checkpoint):
        if checkpoint is not None:
            self.run.flush()

    def on_trajectory_file(self, name, path):
        if self.run.local_artifact_dir("trajectories") is None:
            self.run.log_artifact(path, f"trajectories/{name}")

    def finish(self, result, checkpoint, export):
        self.run.close()  # every metric stored: included in the timing
        super().finish(result, checkpoint, export)


def through_fit(steps: int, store: Path | None, spec: RecordSpec = ALL) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        if store is None:
            ctx = TimedContext(Path(tmp))
        else:
            import tracking

            uri = f"sqlite:///{store / 'mlflow.db'}"
            exp = tracking.ensure_experiment(uri, "bench")
            parent = tracking.start_sweep_run(uri, exp, "bench", {}, {})
            run = tracking.TrialRun.open(uri, exp, parent, "t", "t", {}, {})
            ctx = MlflowContext(Path(tmp), run)
        fit(SyntheticTrainer(MLP), ctx, loop(spec), StopRule(iterations=steps))
        return steps / ctx.timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    n = args.steps
    variants = {
        "a plain": lambda root: plain(n),
        "b1 dynsweep, disk": lambda root: through_fit(n, None),
        "b2 dynsweep, MLflow": lambda root: through_fit(n, root),
        "b3 projected to 4096": lambda root: through_fit(n, None, PROJECTED),
        "c h5py": lambda root: plain(max(50, n // 4), root / "seed.h5"),
    }
    best = dict.fromkeys(variants, 0.0)
    for _ in range(args.repeats):  # interleaved: each variant sees the same machine state
        for name, run in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                os.sync()  # start with the page cache written back
                best[name] = max(best[name], run(Path(tmp)))
    for name, rate in best.items():
        print(f"{name:>22}: {rate:8.1f} steps/s")
    a, c = best["a plain"], best["c h5py"]
    b1, b2, b3 = (
        best["b1 dynsweep, disk"],
        best["b2 dynsweep, MLflow"],
        best["b3 projected to 4096"],
    )
    mb = 269_322 * 4 / 1e6
    print(
        f"all weights are {mb:.2f} MB a step: at {a:.0f} steps/s that is {a * mb:.0f} MB/s "
        "of writes (compare this disk's `dd ... conv=fdatasync` rate)"
    )
    print(
        f"ratios: b1/a = {b1 / a:.3f}, b2/a = {b2 / a:.3f}, b3/a = {b3 / a:.3f}, "
        f"b1/c = {b1 / c:.2f}, b2/c = {b2 / c:.2f}  (goal: b/a >= 0.95, b/c >= 5)"
    )


if __name__ == "__main__":
    main()
