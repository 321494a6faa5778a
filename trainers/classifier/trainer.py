"""The ``classifier`` trainer.

Per step: ``train/loss`` and ``train/acc`` of the minibatch. Per evaluation (every epoch by
default): ``val/loss`` and ``val/acc``. Both are returned as 0-d tensors, so the loop copies
them to the host in batches instead of syncing with the device every step. Probes: ``weights``
(all parameters, flattened, after the step), ``grads`` (their gradients in that step) and
``activations`` (every hidden layer's output on a fixed probe batch of validation images).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from trainers.base import Context, Trainer, TrainerConfig, parameter_columns
from trainers.classifier.model import Classifier, ModelConfig
from trainers.data import DATASETS, Batches, image_shape, load_dataset

TRAIN_SIZES = {"digits": 1797, "mnist": 60_000, "fashion_mnist": 60_000}


class OptimizerConfig(TrainerConfig):
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class ClassifierConfig(TrainerConfig):
    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
    val_fraction: float = Field(0.2, gt=0, lt=1)
    batch_size: int = Field(64, ge=1)
    probe_batch_size: int = Field(32, ge=1)
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()


class ClassifierTrainer(Trainer):
    Config = ClassifierConfig
    probes = ("weights", "grads", "activations")

    config: ClassifierConfig

    @classmethod
    def probe_sizes(cls, config: ClassifierConfig) -> dict[str, dict[str, int]]:
        shape = image_shape(config.dataset)
        with torch.device("meta"):
            model = Classifier(config.model, shape, 10)
            hidden = model.hidden(torch.empty(config.probe_batch_size, *shape))
        params = {name: p.numel() for name, p in model.named_parameters()}
        return {
            "weights": params,
            "grads": dict(params),
            "activations": {"activations": sum(h.numel() for h in hidden)},
        }

    @classmethod
    def estimated_steps_per_epoch(cls, config: ClassifierConfig) -> int:
        n = TRAIN_SIZES[config.dataset]
        if config.dataset == "digits":
            n = round(n * (1 - config.val_fraction))
        return -(-n // config.batch_size)

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        (xt, yt), (xv, yv) = load_dataset(cfg.dataset, ctx.data_dir, cfg.val_fraction, ctx.seed)
        self.train_x, self.train_y = xt.to(self.device), yt.to(self.device)
        self.val_x, self.val_y = xv.to(self.device), yv.to(self.device)
        self.probe_x = self.val_x[: cfg.probe_batch_size]
        classes = int(torch.cat([yt, yv]).max()) + 1
        self.model = Classifier(cfg.model, image_shape(cfg.dataset), classes).to(self.device)
        opt = cfg.optimizer
        if opt.name == "sgd":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(),
                lr=opt.lr,
                momentum=opt.momentum,
                weight_decay=opt.weight_decay,
            )
        else:
            self.optimizer = torch.optim.Adam(
                self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay
            )
        self.batches = Batches(len(self.train_y), cfg.batch_size, ctx.seed + 1)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches.next()
        if self.device.type == "cuda":  # a copy from pageable memory would wait for the GPU
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        return self.train_x[idx], self.train_y[idx]

    def step(self) -> dict[str, torch.Tensor]:
        self.model.train()
        x, y = self._next_batch()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        acc = (logits.argmax(1) == y).float().mean()  # from a bool tensor: no graph
        return {"train/loss": loss.detach(), "train/acc": acc}

    @torch.no_grad()
    def evaluate(self) -> dict[str, torch.Tensor]:
        self.model.eval()
        logits = self.model(self.val_x)
        loss = F.cross_entropy(logits, self.val_y)
        acc = (logits.argmax(1) == self.val_y).float().mean()
        return {"val/loss": loss, "val/acc": acc}

    def probe(self, name: str) -> torch.Tensor | list[torch.Tensor]:
        params = list(self.model.parameters())
        if name == "weights":  # the recorder copies each into its row: one copy, no cat
            return [p.detach() for p in params]
        if name == "grads":
            return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if name == "activations":
            with torch.no_grad():
                self.model.eval()
                hidden = self.model.hidden(self.probe_x)
                return torch.cat([h.reshape(len(h), -1) for h in hidden], 1)
        raise KeyError(name)

    def probe_columns(self, name: str) -> dict[str, list[int]]:
        if name not in ("weights", "grads"):
            return {}
        return parameter_columns(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Hyperparameters come from this trainer's config, not the checkpoint: a PBT exploit
        # loads another trial's state and must keep its own (perturbed) values.
        opt = self.config.optimizer
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = opt.lr, opt.weight_decay
            if "momentum" in group:
                group["momentum"] = opt.momentum
        self.batches.load_state_dict(state["batches"])

    def export(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}
