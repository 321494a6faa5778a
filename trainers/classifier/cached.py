"""Classifiers that other steps use as instruments (the Koopman oracle, the offline FID
extractor): trained once by the ``classifier`` trainer and cached as a ``model.pt`` with the
same header a sweep trial writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainers.classifier.model import Classifier, ModelConfig
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.data import image_shape


def trained_classifier(config: ClassifierConfig, steps: int, folder: Path, data_dir: Path) -> Path:
    """The cached ``model.pt`` of ``config`` trained for ``steps`` steps (seed 0); trains and
    writes it (atomically) the first time."""
    from trainers.local import LocalContext
    from trainers.loop import LoopConfig, StopRule, fit

    key = hashlib.sha256(f"{config.model_dump_json()}|{steps}".encode()).hexdigest()[:12]
    path = Path(folder) / f"{config.dataset}-classifier-{key}.pt"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        ctx = LocalContext(Path(tmp), seed=0, data_dir=Path(data_dir))
        fit(
            ClassifierTrainer(config), ctx, LoopConfig(eval_every=steps), StopRule(iterations=steps)
        )
    header = {"trainer": "classifier", "config": config.model_dump(mode="json"), "seed": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {**header, "step": steps, "state": ctx.export, "val_acc": ctx.result.metrics["val/acc"]},
        partial,
    )
    os.replace(partial, path)
    return path


def load_classifier(checkpoint: dict[str, Any]) -> Classifier:
    """The classifier of a ``classifier`` run's ``model.pt`` (loaded), in eval mode, frozen."""
    config, state = checkpoint["config"], checkpoint["state"]["model"]
    classes = next(v for k, v in reversed(state.items()) if k.endswith("bias")).numel()
    model = Classifier(
        ModelConfig.model_validate(config["model"]), image_shape(config["dataset"]), classes
    )
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
