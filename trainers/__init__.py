"""Trainers: the Trainer contract, the one training loop, recording, datasets, model families.

``TRAINERS`` maps stable names to lazily imported trainer classes ("module:attribute"), so
that reading a config never imports a model family it does not use.
"""

from __future__ import annotations

import importlib
import os

from dynsweep.errors import ConfigError

TRAINERS: dict[str, str] = {
    "classifier": "trainers.classifier.trainer:ClassifierTrainer",
    "diffusion": "trainers.diffusion.trainer:DiffusionTrainer",
    "autoencoder": "trainers.autoencoder.trainer:AutoencoderTrainer",
    "koopman": "trainers.koopman.trainer:KoopmanTrainer",
    "paths": "trainers.paths.trainer:PathsTrainer",
    "subspace": "trainers.paths.subspace_trainer:SubspaceTrainer",
}


def _register_plugins() -> None:
    """Trainers of other packages: ``DYNSWEEP_TRAINERS="name=package.module:Class,..."``.

    Read from the environment so that Ray workers (which inherit it) see the same registry.
    """
    for item in filter(None, os.environ.get("DYNSWEEP_TRAINERS", "").split(",")):
        name, sep, target = item.strip().partition("=")
        if not sep or ":" not in target:
            raise ConfigError(f"DYNSWEEP_TRAINERS: expected name=module:Class, got {item!r}")
        TRAINERS[name] = target


_register_plugins()


def get_trainer_class(name: str):
    """Return the trainer class registered as ``name``; the error lists the valid names."""
    try:
        target = TRAINERS[name]
    except KeyError:
        valid = ", ".join(sorted(TRAINERS))
        raise ConfigError(f"trainer: unknown trainer {name!r}; expected one of: {valid}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
