"""Shared pieces of the benchmarks: the synthetic-MNIST MLP trainer and timing helpers."""

from __future__ import annotations

import platform
import time

import torch

from trainers.classifier.model import Classifier
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.data import Batches

# The EDM study's network: 784-256-256-10, batch 128.
MLP = ClassifierConfig(
    model={"widths": [256, 256]}, batch_size=128, optimizer={"name": "sgd", "lr": 0.01}
)


class SyntheticTrainer(ClassifierTrainer):
    """The classifier on 4,096 random 28×28 images (no dataset to load)."""

    def setup(self, ctx) -> None:
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(4096, 1, 28, 28, generator=gen)
        labels = torch.randint(0, 10, (4096,), generator=gen)
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        self.train_x, self.train_y = images, labels
        self.val_x, self.val_y = images[:512], labels[:512]
        self.probe_x = images[:32]
        self.model = Classifier(self.config.model, (1, 28, 28), 10)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.config.optimizer.lr)
        self.batches = Batches(len(labels), self.config.batch_size, ctx.seed + 1)


def machine() -> str:
    return (
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def plain_loop(steps: int, after_step=None, at_end=None) -> float:
    """Steps/s of a plain PyTorch loop on the MLP; ``after_step(step, model, loss)`` adds work
    (writing weights, logging), ``at_end()`` runs inside the timing."""
    import tempfile
    from pathlib import Path

    import torch.nn.functional as F

    from trainers.local import LocalContext

    trainer = SyntheticTrainer(MLP)
    trainer.setup(LocalContext(Path(tempfile.mkdtemp())))
    model, opt = trainer.model, trainer.optimizer
    with Timer() as t:
        for step in range(steps):
            x, y = trainer._next_batch()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = loss.item()
            if after_step is not None:
                after_step(step, model, value)
        if at_end is not None:
            at_end()
    return steps / t.seconds
