"""The networks of the paths study, their data, likelihoods and control-point initialisation.

Regression (toy, diabetes, CSV): an MLP depth × width → 1 with a Gaussian likelihood whose
scale is learnt. Classification (digits, MNIST, Fashion-MNIST): an MLP on the flattened image
or a LeNet-size CNN (two 5×5 convolutions with 6 and 16 channels, each followed by the
activation and 2×2 max-pooling, then the MLP head), with the categorical likelihood.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from dynsweep.errors import DataError
from trainers.data import load_dataset
from trainers.nets import mlp
from trainers.paths.data import UCI, Splits, csv_regression, diabetes, toy_regression, uci

if TYPE_CHECKING:
    from trainers.paths.trainer import PathsConfig

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist")
CLASSES = 10


def is_classification(config: PathsConfig) -> bool:
    return config.dataset in IMAGE_DATASETS


def load_splits(config: PathsConfig, seed: int, data_dir: Path = Path("data")) -> Splits:
    """Train/val/test splits. Regression data are drawn and split per seed; image datasets use
    one fixed split (seed 0; its held-out part: a third val, two thirds test), shared by all
    seeds, so that packed members can share it."""
    if config.dataset == "toy":
        return toy_regression(seed)
    if config.dataset == "diabetes":
        return diabetes(seed)
    if config.dataset == "csv":
        return csv_regression(config.csv_path, seed)
    if config.dataset in UCI:
        return uci(config.dataset, seed)
    (xt, yt), (xh, yh) = load_dataset(config.dataset, data_dir, 0.3, 0)
    if config.architecture == "mlp":
        xt, xh = xt.flatten(1), xh.flatten(1)
    n_val = len(yh) // 3
    return {"train": (xt, yt), "val": (xh[:n_val], yh[:n_val]), "test": (xh[n_val:], yh[n_val:])}


def cast(x: torch.Tensor, y: torch.Tensor, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A split on ``device``: inputs (and regression targets) in ``dtype``, labels as they are."""
    return x.to(device, dtype), (y.to(device, dtype) if y.is_floating_point() else y.to(device))


def network(input_shape: tuple[int, ...], config: PathsConfig) -> nn.Sequential:
    """The network whose weights the curve moves through."""
    act = ACTIVATIONS[config.activation]
    outputs = CLASSES if is_classification(config) else 1
    if config.architecture == "mlp":
        return mlp([math.prod(input_shape), *[config.width] * config.depth, outputs], act)
    channels, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        mlp([16 * (h // 4) * (w // 4), *[config.width] * config.depth, outputs], act),
    )


def log_likelihood(y: torch.Tensor, out: torch.Tensor, log_scale, classify: bool) -> torch.Tensor:
    """Pointwise log-likelihood: categorical (``classify``) or N(y; out, exp(log_scale)²)."""
    if classify:
        return F.log_softmax(out, -1).gather(1, y[:, None]).squeeze(1)
    resid = (y - out).flatten()
    return -0.5 * (math.log(2 * math.pi) + 2 * log_scale + resid**2 / torch.exp(2 * log_scale))


def unflatten(flat: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """A flat weight vector as the named parameters of the network."""
    params, start = {}, 0
    for name, shape in shapes.items():
        n = shape.numel()
        params[name] = flat[start : start + n].reshape(shape)
        start += n
    return params


def initial_control_points(
    config: PathsConfig, input_shape: tuple[int, ...], seed: int
) -> torch.Tensor:
    """θ_0..θ_K, (K+1)×P: independent initialisations of the network; with ``endpoints``, the
    two given networks at the ends and the straight line between them inside."""
    if config.endpoints is not None:
        ends = [load_endpoint(p) for p in config.endpoints]
        size = sum(p.numel() for p in network(input_shape, config).parameters())
        for path, end in zip(config.endpoints, ends):
            if end.numel() != size:
                raise DataError(
                    f"config.endpoints: {path} holds {end.numel()} weights; this network has "
                    f"{size} (same dataset, architecture, depth, width expected)"
                )
        s = torch.linspace(0, 1, config.order + 1)[:, None]
        return (1 - s) * ends[0] + s * ends[1]
    points = []
    for k in range(config.order + 1):
        torch.manual_seed(seed * 1000 + k)
        net = network(input_shape, config)
        points.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return torch.stack(points)


def load_paths_model(path: str, field: str, expected: str) -> dict:
    """A ``paths`` run's model/model.pt; errors name the config ``field`` and the file."""
    file = Path(path)
    if not path or not file.is_file():
        raise DataError(f"{field}: {path!r} is not a file; expected {expected}")
    try:
        header = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{file}: unreadable model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict) or header.get("trainer") != "paths":
        trainer = header.get("trainer") if isinstance(header, dict) else None
        raise DataError(f"{file}: a {trainer!r} model, expected {expected}")
    return header


def load_endpoint(path: str) -> torch.Tensor:
    """One trained network from a ``paths`` run of order 0 (its model/model.pt): P weights."""
    expected = "the model/model.pt of a finished 'paths' run with order 0 (one trained network)"
    header = load_paths_model(path, "config.endpoints", expected)
    theta = header.get("state", {}).get("theta")
    if theta is None or theta.dim() != 2 or len(theta) != 1:
        raise DataError(
            f"config.endpoints: {path} is not one trained network (a 'paths' run of order 0)"
        )
    return theta[0]
