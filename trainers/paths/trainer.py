"""The ``paths`` trainer: a Bezier curve of networks through weight space (Dold et al.).

The control points θ_0..θ_K are flattened parameter vectors of one small network (an MLP
depth × width, or a LeNet-size CNN on images; relu / elu / tanh), each initialised
independently — or, with ``endpoints``, two trained networks fixed at the ends (mode
connectivity) and the inner points starting on the line between them. Per step: the expected
NLL (Gaussian with a learnt scale for regression, cross-entropy for classification) over
``t_samples`` points t ~ U(0, 1) along the curve; with ``uniform_t`` each point is weighted by
‖b′(t)‖ / L so the expectation is uniform in arc length, the weights inside the differentiated
loss as in the original (``uniform_t_weights: detached`` treats them as constants). Per
evaluation: ``val/loss`` (the NLL averaged over a t-grid of the validation split),
``val/loss_max`` along the curve, ``val/acc`` (classification), and the curve's geometry (see
:func:`trainers.paths.bezier.metrics`): ``val/path_length``, ``val/path_chord``,
``val/path_polygon``, ``val/path_mean_curvature_t`` (∫κ dt, the original's "Average
curvature"), ``val/path_b2_integral`` (∫‖b″‖ dt) and ``val/path_mean_curvature_s`` (∫κ ds / L).
The curve with the best ``val/loss`` is kept and exported. Order 0 trains one network (the end
points of a later mode-connectivity sweep).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call

from trainers.base import Context, Trainer, TrainerConfig
from trainers.data import Batches, image_shape, load_dataset
from trainers.paths import bezier
from trainers.paths.data import csv_regression
from trainers.paths.model import (
    IMAGE_DATASETS,
    cast,
    initial_control_points,
    is_classification,
    load_endpoint,
    load_splits,
    log_likelihood,
    network,
    unflatten,
)

# Training-split sizes (70 %) of the datasets, for memory estimates without loading them
TRAIN_SIZES = {"toy": 210, "diabetes": 309, "digits": 1258}
TRAIN_SIZES.update(energy=537, airfoil=1052, concrete=721, yacht=215)
FEATURES = {"toy": 1, "diabetes": 10, "energy": 8, "airfoil": 5, "concrete": 8, "yacht": 6}


class PathsConfig(TrainerConfig):
    # energy, airfoil, concrete, yacht: the UCI sets the original ships (trainers/paths/uci/)
    dataset: Literal[
        "toy",
        "diabetes",
        "csv",
        "energy",
        "airfoil",
        "concrete",
        "yacht",
        "digits",
        "mnist",
        "fashion_mnist",
    ] = "toy"
    csv_path: str = ""  # dataset csv: numeric columns, target last
    architecture: Literal["mlp", "cnn"] = "mlp"  # cnn: LeNet-size, image datasets only
    order: int = Field(2, ge=0)  # K: the curve has K + 1 control points (0: one network)
    depth: int = Field(2, ge=1)  # hidden layers (of the CNN's head)
    width: int = Field(16, ge=1)
    activation: Literal["relu", "elu", "tanh"] = "relu"
    # Two trained networks (model.pt of 'paths' runs of order 0) fixed as the curve's ends.
    endpoints: tuple[str, str] | None = None
    t_samples: int = Field(8, ge=1)
    uniform_t: bool = False
    # differentiated: ‖b′(t)‖ / L inside the loss's gradient (Dold et al.); detached: constants.
    uniform_t_weights: Literal["differentiated", "detached"] = "differentiated"
    lr: float = Field(1e-2, gt=0)
    # Regression: the Gaussian likelihood's learnt scale σ starts here (the original's
    # out_scale 0.05; this project used 1.0 before).
    noise_init: float = Field(0.05, gt=0)
    batch_size: int = Field(0, ge=0)  # training examples a step (0: the whole split)
    eval_points: int = Field(21, ge=2)
    # float64: packed and unpacked runs agree to ~1e-9 over long runs (float32: rounding
    # differences of 1e-7 grow through training, to ~1e-3 after a few hundred steps).
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _consistent(self) -> PathsConfig:
        if self.architecture == "cnn" and self.dataset not in IMAGE_DATASETS:
            raise ValueError(
                f"architecture cnn needs an image dataset: {', '.join(IMAGE_DATASETS)}"
            )
        if self.order == 0 and (self.uniform_t or self.endpoints):
            raise ValueError("order 0 is one network: no uniform_t, no endpoints")
        return self


class PathsTrainer(Trainer):
    Config = PathsConfig
    probes = ("control_points",)
    config: PathsConfig
    pack_fields = ("uniform_t", "lr", "uniform_t_weights")
    packed = "trainers.paths.packed:PackedPathsTrainer"

    @classmethod
    def prepare(cls, configs: list[PathsConfig], data_dir: Path) -> None:
        """Files must be there and readable; image datasets are fetched once."""
        for c in configs:
            if c.dataset == "csv":
                csv_regression(c.csv_path)
            if c.dataset in IMAGE_DATASETS:
                load_dataset(c.dataset, data_dir, 0.3, 0)
            for path in c.endpoints or ():
                load_endpoint(path)

    @classmethod
    def member_bytes(cls, config: PathsConfig) -> int | None:
        """One curve's training memory, estimated: its K + 1 control points with their
        gradients and Adam's two moments, and the activations of a batch at ``t_samples``
        points of the curve (kept for the backward pass). ``csv``: unknown."""
        if config.dataset == "csv":
            return None
        n = FEATURES.get(config.dataset)
        shape = (n,) if n else image_shape(config.dataset)
        with torch.device("meta"):
            params = sum(p.numel() for p in network(shape, config).parameters())
        size = 8 if config.dtype == "float64" else 4
        train = TRAIN_SIZES.get(config.dataset, 42_000)
        batch = min(config.batch_size or train, train)
        if config.architecture == "cnn":
            _, h, w = shape
            per_example = 6 * h * w + 4 * h * w + config.width * config.depth
        else:
            per_example = math.prod(shape) + config.width * config.depth
        activations = 3 * batch * config.t_samples * per_example  # outputs, activations, grads
        return int(size * (4 * (config.order + 1) * params + activations))

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        self.device = ctx.device
        self.classify = is_classification(cfg)
        splits = load_splits(cfg, ctx.seed, ctx.data_dir)
        self.dtype = getattr(torch, cfg.dtype)
        self.data = {k: cast(x, y, self.device, self.dtype) for k, (x, y) in splits.items()}
        shape = tuple(self.data["train"][0].shape[1:])
        self.template = network(shape, cfg).to(self.device)
        self.shapes = {n: p.shape for n, p in self.template.named_parameters()}
        theta = initial_control_points(cfg, shape, ctx.seed)
        self.theta = nn.Parameter(theta.to(self.device, self.dtype))
        log_scale = torch.tensor(math.log(cfg.noise_init), device=self.device, dtype=self.dtype)
        self.log_scale = nn.Parameter(log_scale)
        self.optimizer = torch.optim.Adam([self.theta, self.log_scale], lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(ctx.seed + 1)
        n_train = len(self.data["train"][1])
        self.batches = Batches(n_train, cfg.batch_size or n_train, ctx.seed + 2)
        self.best: dict[str, Any] = {"val_loss": math.inf}

    def predict(self, flat: torch.Tensor, part: str) -> torch.Tensor:
        """The network with flat weights ``flat`` on split ``part``: N×outputs."""
        return functional_call(self.template, unflatten(flat, self.shapes), (self.data[part][0],))

    def log_likelihood(self, flat: torch.Tensor, part: str, log_scale=None) -> torch.Tensor:
        """Pointwise log-likelihood of split ``part`` under weights ``flat``: N."""
        log_scale = self.log_scale if log_scale is None else log_scale
        y = self.data[part][1]
        return log_likelihood(y, self.predict(flat, part), log_scale, self.classify)

    def _outputs(self, t: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The network at each point of the curve at ``t``, on inputs ``x``."""
        return [
            functional_call(self.template, unflatten(flat, self.shapes), (x,))
            for flat in bezier.point(self.theta, t)
        ]

    def _nll(self, outputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """NLL of ``y`` under each of ``outputs``: len(outputs)."""
        return torch.stack(
            [-log_likelihood(y, out, self.log_scale, self.classify).mean() for out in outputs]
        )

    def objective(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss at curve points ``t`` on (x, y): the mean NLL over t, each
        weighted by ‖b′(t)‖ / L with ``uniform_t``."""
        cfg = self.config
        losses = self._nll(self._outputs(t, x), y)
        if not cfg.uniform_t:
            return losses.mean()
        detach = cfg.uniform_t_weights == "detached"
        return (bezier.arc_length_weights(self.theta, t, detach=detach) * losses).mean()

    def step(self) -> dict[str, float]:
        cfg = self.config
        t = torch.rand(cfg.t_samples, generator=self.generator).to(self.device, self.dtype)
        x, y = self.data["train"]
        if cfg.batch_size:
            idx = self.batches.next().to(self.device)
            x, y = x[idx], y[idx]
        loss = self.objective(t, x, y)
        self.optimizer.zero_grad()
        loss.backward()
        if cfg.endpoints is not None:  # the given networks stay where they are
            self.theta.grad[[0, -1]] = 0
        self.optimizer.step()
        metrics = {"train/loss": loss.item()}
        if not self.classify:
            metrics["train/noise_scale"] = float(self.log_scale.detach().exp())
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        t = torch.linspace(0, 1, self.config.eval_points, device=self.device, dtype=self.dtype)
        x, y = self.data["val"]
        outputs = self._outputs(t, x)  # once, for the loss and the accuracy
        val = self._nll(outputs, y)
        metrics = {"val/loss": float(val.mean()), "val/loss_max": float(val.max())}
        if self.classify:
            hits = [out.argmax(1).eq(y).float().mean() for out in outputs]
            metrics["val/acc"] = float(torch.stack(hits).mean())
        metrics.update({f"val/path_{k}": v for k, v in bezier.metrics(self.theta).items()})
        if metrics["val/loss"] < self.best["val_loss"]:
            self.best = {
                "val_loss": metrics["val/loss"],
                "theta": self.theta.detach().clone(),
                "log_scale": self.log_scale.detach().clone(),
            }
        metrics["val/best_loss"] = self.best["val_loss"]
        return metrics

    @torch.no_grad()
    def write_artifacts(self, folder: Path) -> list[Path]:
        from trainers.figures import loss_along_t

        t = torch.linspace(0, 1, 101, device=self.device, dtype=self.dtype)
        x, y = self.data["val"]
        loss = self._nll(self._outputs(t, x), y)
        label = "validation cross-entropy" if self.classify else "validation NLL"
        path = folder / "loss_along_t.png"
        return [loss_along_t(t.cpu().numpy(), loss.cpu().numpy(), label, path)]

    def probe(self, name: str) -> torch.Tensor:
        if name == "control_points":
            return self.theta.detach().reshape(-1)
        raise KeyError(name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": self.theta.detach().clone(),
            "log_scale": self.log_scale.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "batches": self.batches.state_dict(),
            "best": dict(self.best),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
            self.log_scale.copy_(state["log_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.generator.set_state(state["generator"])
        self.batches.load_state_dict(state["batches"])
        self.best = dict(state["best"])

    def export(self) -> dict[str, Any]:
        best = (
            self.best
            if "theta" in self.best
            else {"theta": self.theta.detach(), "log_scale": self.log_scale.detach()}
        )
        return {
            "theta": best["theta"],
            "log_scale": best["log_scale"],
            "shapes": {k: list(v) for k, v in self.shapes.items()},
        }
