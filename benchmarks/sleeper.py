"""A trainer whose work is sleeping: sweep overhead measured without training noise."""

from __future__ import annotations

import time

import torch
from pydantic import Field

from trainers.base import Trainer, TrainerConfig


class SleepConfig(TrainerConfig):
    seconds: float = Field(1.0, gt=0)  # per trial of 10 steps
    index: int = 0


class SleepTrainer(Trainer):
    Config = SleepConfig

    def setup(self, ctx) -> None:
        self.done = 0

    def step(self) -> dict[str, float]:
        time.sleep(self.config.seconds / 10)
        self.done += 1
        return {"train/loss": 1.0 / self.done}

    def state_dict(self):
        return {"done": torch.tensor(self.done)}

    def load_state_dict(self, state) -> None:
        self.done = int(state["done"])
