"""The ordered-digits dataset and its oracle classifier.

Images are arranged into the repeating class sequence 0, 1, …, c−1, 0, 1, … (one image of each
class per cycle, each class's images in a seeded random order), so that the "dynamics" maps an
image of class k to an image of class k + 1 mod c. The sequence is split contiguously: the
first 3/5 for training, the next 1/5 for validation, the last 1/5 for testing, or into the
counts ``sizes`` = (train, val, test) asked for (kooplearn's example: 3,000, 1,000, 1,000).

``order="interleaved"`` is kooplearn's ``fetch_ordered_mnist``: no shuffling, the k-th image of
each class in the dataset's own order forms the k-th cycle. ``split="test"`` takes only an IDX
dataset's test files (the 10,000 MNIST test images), ``"all"`` its training and test files
(or, for ``digits``, all 1,797 images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dynsweep.errors import DataError
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


def interleaved_sequence(
    images: torch.Tensor, labels: torch.Tensor, classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """kooplearn's ordering: cycle k holds the k-th image (in dataset order) of each class,
    for as many cycles as the rarest class has images."""
    pools = [(labels == k).nonzero().flatten() for k in range(classes)]
    cycles = min(len(p) for p in pools)
    order = torch.stack([p[:cycles] for p in pools], 1).reshape(-1)
    return images[order], labels[order]


def load_images(name: str, data_dir: Path, split: str = "all"):
    """(images, labels) of dataset ``name``: its test files only (``split="test"``) or all."""
    if split == "test":
        from trainers.idx import SOURCES, load_split

        if name not in SOURCES:
            raise DataError(
                f"split: 'test' reads an IDX dataset's test files; {name!r} has none "
                f"(expected one of {sorted(SOURCES)})"
            )
        return load_split(name, data_dir, "test")
    (xt, yt), (xv, yv) = load_dataset(name, data_dir, 0.2, 0)
    return torch.cat([xt, xv]), torch.cat([yt, yv])


def ordered_splits(
    name: str,
    data_dir: Path,
    classes: int,
    seed: int,
    split: str = "all",
    order: str = "shuffled",
    sizes: tuple[int, int, int] | None = None,
):
    """{"train" | "val" | "test": (images, labels)} of the ordered sequence of ``name``."""
    images, labels = load_images(name, data_dir, split)
    if order == "interleaved":
        x, y = interleaved_sequence(images, labels, classes)
    else:
        x, y = ordered_sequence(images, labels, classes, seed)
    if sizes is not None:
        if sum(sizes) > len(x):
            raise DataError(
                f"sizes: {list(sizes)} asks for {sum(sizes)} images; the ordered sequence of "
                f"{name!r} ({split}, classes 0-{classes - 1}) has {len(x)}"
            )
        a, b = sizes[0], sizes[0] + sizes[1]
        cuts = {"train": (0, a), "val": (a, b), "test": (b, b + sizes[2])}
        return {part: (x[i:j], y[i:j]) for part, (i, j) in cuts.items()}
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


def kooplearn_oracle(train, val, classes: int, key: str):
    """kooplearn's oracle (``models.train_oracle``) trained on the ``train`` (images, labels) of
    the ordered sequence, cached under ``key`` in ``$DYNSWEEP_CACHE/oracles`` (default
    ``~/.cache/dynsweep``; not in ``data_dir``, which may be a read-only data folder), written
    atomically; returns (model in eval mode, its accuracy on ``val``)."""
    import os

    from trainers.koopman.models import CNNEncoder, train_oracle

    cache = Path(os.environ.get("DYNSWEEP_CACHE", Path.home() / ".cache" / "dynsweep"))
    path = cache / "oracles" / f"kooplearn-oracle-{key}.pt"
    x, y = train
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model = CNNEncoder(classes, x.shape[1], x.shape[-1])
        model.load_state_dict(saved["state"])
        return model.eval().requires_grad_(False), float(saved["val_acc"])
    model = train_oracle(x, y, classes)
    with torch.no_grad():
        acc = float((model(val[0]).argmax(1) == val[1]).float().mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state": model.state_dict(), "val_acc": acc}, partial)
    os.replace(partial, path)
    return model.requires_grad_(False), acc
