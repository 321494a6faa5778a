"""P1: training speed while recording ALL weights every step, against baselines run alongside.

    python -m benchmarks.recording [--steps 600] [--repeats 3]

(a) a plain PyTorch loop: the 784-256-256-10 MLP on synthetic 28×28 data, batch 128;
(b) the same trainer through dynsweep's loop recording all weights (269,322 floats, 1.08 MB)
    every step — b1 to local disk only, b2 also logging every chunk and every metric to a real
    MLflow sqlite store (what a trial does); b3 records a seeded random projection of all
    weights to 4,096 dimensions instead (``project: 4096``);
    b4 records all weights as float16, b5 every second step (half the bytes each);
(c) the seed study's way: the plain loop writing every weight tensor to HDF5 after each step.
All weights every step may be more than the disk takes, so each repeat also measures the
disk's sequential write rate for the same volume, written the recorder's way (32 MiB chunks,
``O_DIRECT``), and the plain loop while a thread only writes those bytes (a_io: what the writes
themselves cost the loop, e.g. where a VM's disk emulation takes CPU from it).
Rates are steps/s over the training steps (set-up excluded), medians of N interleaved repeats.
Goal: b2 ≥ 0.90 × limit, limit = min(a, disk rate / bytes per step) (each repeat against its
own baselines); b3–b5 ≥ 0.95 × a; b ≥ 5 × c. The ``b2/limit`` line is printed last.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
from pathlib import Path

import torch

from benchmarks.common import MLP, SyntheticTrainer, Timer, machine, plain_loop
from trainers.direct_io import DirectWriter, aligned_empty
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import CHUNK_BYTES, RecordSpec


def loop(spec: RecordSpec) -> LoopConfig:
    return LoopConfig(eval_every=10**9, report_every=50, checkpoint_every=10**9, record=(spec,))


ALL = RecordSpec(probe="weights")
PROJECTED = RecordSpec(probe="weights", project=4096)
HALF = RecordSpec(probe="weights", dtype="float16")
EVERY_2 = RecordSpec(probe="weights", every=2)
WEIGHTS = 269_322  # floats in the 784-256-256-10 MLP
WEIGHTS_BYTES = WEIGHTS * 4


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


def disk_rate(root: Path, nbytes: int) -> float:
    """Bytes/s of the disk for ``nbytes`` written the recorder's way: 32 MiB ``.npy`` chunks
    from page-aligned memory, ``O_DIRECT`` where the file system takes it (the recorder does
    not fsync; a direct write is on the device when it returns)."""
    rows = CHUNK_BYTES // WEIGHTS_BYTES
    buffer, memory = aligned_empty(rows, WEIGHTS, torch.float32)
    buffer.normal_()
    writer = DirectWriter()
    chunks = max(1, round(nbytes / buffer.numpy().nbytes))
    with Timer() as t:
        for i in range(chunks):
            writer.write_npy(root / f"rate-{i}.npy", buffer.numpy(), memory)
    return chunks * buffer.numpy().nbytes / t.seconds


def plain_writing(steps: int, root: Path) -> float:
    """The plain loop while a thread writes the same bytes the recorder's way (a chunk every
    31 steps; the rows themselves are not copied): what the writes alone cost the loop."""
    rows = CHUNK_BYTES // WEIGHTS_BYTES
    buffer, memory = aligned_empty(rows, WEIGHTS, torch.float32)
    writer, jobs = DirectWriter(), queue.Queue(maxsize=2)

    def write() -> None:
        while (i := jobs.get()) is not None:
            writer.write_npy(root / f"io-{i}.npy", buffer.numpy(), memory)

    thread = threading.Thread(target=write)
    thread.start()

    def after(step, model, loss):
        if (step + 1) % rows == 0:
            jobs.put(step)

    try:
        return plain_loop(steps, after, at_end=lambda: (jobs.put(None), thread.join()))
    finally:
        if thread.is_alive():
            jobs.put(None)
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    n = args.steps
    variants = {
        "a plain": lambda root: plain(n),
        "a_io plain + writes": lambda root: plain_writing(n, root),
        "b1 dynsweep, disk": lambda root: through_fit(n, None),
        "b2 dynsweep, MLflow": lambda root: through_fit(n, root),
        "b3 projected to 4096": lambda root: through_fit(n, None, PROJECTED),
        "b4 float16": lambda root: through_fit(n, None, HALF),
        "b5 every 2": lambda root: through_fit(n, None, EVERY_2),
        "c h5py": lambda root: plain(max(50, n // 4), root / "seed.h5"),
        "disk MB/s": lambda root: disk_rate(root, n * WEIGHTS_BYTES) / 1e6,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved: each variant sees the same machine state
        for name, run in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                os.sync()  # start with the page cache written back
                rates[name].append(run(Path(tmp)))
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in med.items():
        each = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:>22}: {rate:8.1f} {'' if 'MB' in name else 'steps/s'} (median of {each})")
    mb = WEIGHTS_BYTES / 1e6
    # Each repeat against its own baselines: limit = min(a, disk rate / bytes per step).
    limits = [min(a, d / mb) for a, d in zip(rates["a plain"], rates["disk MB/s"])]
    of_limit = [b / lim for b, lim in zip(rates["b2 dynsweep, MLflow"], limits)]
    a, a_io = med["a plain"], med["a_io plain + writes"]
    print(
        f"all weights are {mb:.2f} MB a step: at {a:.0f} steps/s that is {a * mb:.0f} MB/s; "
        f"the disk takes {med['disk MB/s']:.0f} MB/s the recorder's way "
        f"({med['disk MB/s'] / mb:.0f} steps/s). The plain loop while a thread only writes "
        f"those bytes: {a_io:.0f} steps/s = {a_io / a:.2f} a (what the writes cost the loop)"
    )
    ratio = {k: med[k] / a for k in variants if k.startswith("b")}
    print(
        "ratios: "
        + ", ".join(f"{k.split()[0]}/a = {v:.3f}" for k, v in ratio.items())
        + f", b2/a_io = {med['b2 dynsweep, MLflow'] / a_io:.3f}"
        + f", b1/c = {med['b1 dynsweep, disk'] / med['c h5py']:.2f}"
        + f", b2/c = {med['b2 dynsweep, MLflow'] / med['c h5py']:.2f}"
    )
    print(
        f"limit = min(a, disk_rate / bytes_per_step) = {statistics.median(limits):.0f} steps/s; "
        f"b2/limit = {statistics.median(of_limit):.2f}  (median of {args.repeats}: "
        + ", ".join(f"{r:.2f}" for r in of_limit)
        + "; goal: b2/limit >= 0.90, b3-b5 >= 0.95 a, b/c >= 5)"
    )


if __name__ == "__main__":
    main()
