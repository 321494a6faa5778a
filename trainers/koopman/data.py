"""The ordered-digits dataset and its oracle classifier.

Images are arranged into the repeating class sequence 0, 1, …, c−1, 0, 1, … (one image of each
class per cycle, each class's images in a seeded random order), so that the "dynamics" maps an
image of class k to an image of class k + 1 mod c. The sequence is split contiguously: the
first 3/5 for training, the next 1/5 for validation, the last 1/5 for testing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainers.data import load_dataset


def ordered_sequence(
    images: torch.Tensor, labels: torch.Tensor, classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) in the order 0, 1, …, c−1, 0, 1, … for as many whole cycles as the
    rarest class allows."""
    gen = torch.Generator().manual_seed(seed)
    pools = []
    for k in range(classes):
        idx = (labels == k).nonzero().flatten()
        pools.append(idx[torch.randperm(len(idx), generator=gen)])
    cycles = min(len(p) for p in pools)
    order = torch.stack([p[:cycles] for p in pools], 1).reshape(-1)
    return images[order], labels[order]


def ordered_splits(name: str, data_dir: Path, classes: int, seed: int):
    """{"train" | "val" | "test": (images, labels)} of the ordered sequence of ``name``."""
    (xt, yt), (xv, yv) = load_dataset(name, data_dir, 0.2, 0)
    images, labels = torch.cat([xt, xv]), torch.cat([yt, yv])
    x, y = ordered_sequence(images, labels, classes, seed)
    n = len(x) // classes * classes  # whole cycles in each part keep the labels aligned
    fifth = n // 5 // classes * classes
    cuts = {"train": (0, 3 * fifth), "val": (3 * fifth, 4 * fifth), "test": (4 * fifth, n)}
    return {part: (x[a:b], y[a:b]) for part, (a, b) in cuts.items()}


def oracle(name: str, data_dir: Path, steps: int = 800) -> torch.nn.Module:
    """A small CNN (two conv blocks + linear) trained once on ``name`` by dynsweep's own
    ``classifier`` trainer and cached in ``data_dir/oracles``; returns it in eval mode."""
    from trainers.classifier.cached import load_classifier, trained_classifier
    from trainers.classifier.trainer import ClassifierConfig

    config = ClassifierConfig.model_validate(
        {
            "dataset": name,
            "model": {"kind": "cnn", "channels": [16, 32]},
            "optimizer": {"name": "adam", "lr": 2e-3},
        }
    )
    path = trained_classifier(config, steps, Path(data_dir) / "oracles", Path(data_dir))
    return load_classifier(torch.load(path, weights_only=True))
