"""Overhead of dynsweep's training loop against a plain PyTorch loop, measured side by side.

    python -m benchmarks.loop_overhead [--steps 600] [--repeats 3]

(a) a plain PyTorch loop training the classifier's MLP (784-256-256-10, synthetic 28×28 data,
batch 128); (b) the same model through ``trainers.loop.fit`` with no recording; (c) through
``fit`` recording all weights every step (Recorder v1: synchronous .npy chunks). Prints
steps/s of each and the ratios b/a and c/a (the last line). No Ray, no MLflow: this measures
the loop and the recorder only.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, RecordSpec, StopRule, fit

CONFIG = ClassifierConfig(
    model={"widths": [256, 256]}, batch_size=128, optimizer={"name": "sgd", "lr": 0.01}
)


class SyntheticTrainer(ClassifierTrainer):
    """The classifier on random 28×28 images (no dataset needed)."""

    def setup(self, ctx) -> None:
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(4096, 1, 28, 28, generator=gen)
        labels = torch.randint(0, 10, (4096,), generator=gen)
        torch.manual_seed(ctx.seed)
        from trainers.classifier.model import Classifier

        self.device = ctx.device
        self.train_x, self.train_y = images, labels
        self.val_x, self.val_y = images[:512], labels[:512]
        self.probe_x = images[:32]
        self.model = Classifier(self.config.model, (1, 28, 28), 10)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.config.optimizer.lr)
        self.generator = torch.Generator().manual_seed(ctx.seed + 1)
        self.order = torch.randperm(len(labels), generator=self.generator)
        self.position = 0


def plain(steps: int) -> float:
    trainer = SyntheticTrainer(CONFIG)
    trainer.setup(LocalContext(Path(tempfile.mkdtemp())))
    model, opt = trainer.model, trainer.optimizer
    start = time.perf_counter()
    for _ in range(steps):
        x, y = trainer._next_batch()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    return steps / (time.perf_counter() - start)


def through_fit(steps: int, record: bool) -> float:
    loop = LoopConfig(
        eval_every=10**9,
        report_every=50,
        checkpoint_every=10**9,
        record=(RecordSpec(probe="weights"),) if record else (),
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(SyntheticTrainer(CONFIG), LocalContext(Path(tmp)), loop, StopRule(iterations=steps))
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    best = {"plain": 0.0, "fit": 0.0, "fit+record": 0.0}
    for _ in range(args.repeats):  # interleaved, best of N: the same machine state for each
        best["plain"] = max(best["plain"], plain(args.steps))
        best["fit"] = max(best["fit"], through_fit(args.steps, record=False))
        best["fit+record"] = max(best["fit+record"], through_fit(args.steps, record=True))
    for name, rate in best.items():
        print(f"{name:>12}: {rate:8.1f} steps/s")
    print(
        f"ratio fit/plain = {best['fit'] / best['plain']:.3f}, "
        f"fit+record/plain = {best['fit+record'] / best['plain']:.3f}"
    )


if __name__ == "__main__":
    main()
