"""Generative metrics of diffusion runs: FID (clean-fid) and the ELBO, from a run's model.

Both steps take a run's final model (``input: model``). FID compares samples of the EMA model
with the training set through a feature extractor: clean-fid's Inception network (its weights
are downloaded once) or, with no network, the hidden features of a classifier trained by
dynsweep's own ``classifier`` trainer (``extractor: classifier``, ``classifier:`` its run id or
``model.pt``). Reference statistics are computed once per (dataset, split, extractor) and
cached in ``~/.cache/dynsweep/fid``.

Both run on ``device`` (default ``cpu``): the model, its sampling, the extractor and the
reference statistics. The analysis runner gives them ``cuda`` when the sweep's
``resources.analysis_gpus`` gives their Ray tasks a GPU. With the classifier extractor the
images stay on the device from sampling to features; Inception features go through clean-fid's
own per-image "clean" resize on the CPU, which is what makes its numbers comparable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from analysis.base import StepResult
from dynsweep.errors import DataError
from dynsweep.progress import Bar

CPU = torch.device("cpu")


def cache_dir() -> Path:
    """Where reference statistics are kept (``$DYNSWEEP_CACHE/fid``, default ~/.cache)."""
    return Path(os.environ.get("DYNSWEEP_CACHE", Path.home() / ".cache" / "dynsweep")) / "fid"


class ClassifierFeatures(nn.Module):
    """The last hidden layer of a dynsweep classifier, as a clean-fid feature extractor.

    Takes what clean-fid hands an extractor (B×3×H×W floats in [0, 255], here at the dataset's
    own size: no resizing) and returns B×F features.
    """

    def __init__(self, checkpoint: dict[str, Any]) -> None:
        super().__init__()
        from trainers.classifier.cached import load_classifier
        from trainers.data import image_shape

        self.model = load_classifier(checkpoint)
        self.shape = image_shape(checkpoint["config"]["dataset"])
        digest = hashlib.sha256()
        for v in checkpoint["state"]["model"].values():
            digest.update(v.detach().cpu().numpy().tobytes())
        self.name = f"classifier-{digest.hexdigest()[:12]}"

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        grey = batch.float().mean(1, keepdim=True) / 255.0
        if tuple(grey.shape[-2:]) != self.shape[1:]:
            grey = nn.functional.interpolate(grey, size=self.shape[1:], mode="area")
        return self.model.hidden(grey)[-1].flatten(1)


def build_extractor(
    name: str,
    classifier: str | None,
    device: torch.device,
    dataset: str = "digits",
    data_dir: str = "data",
    tracking_uri: str | None = None,
):
    """(module, cache name, resize function or None for clean-fid's 299×299 'clean' resize).

    ``classifier``: a run id (in the store ``tracking_uri``) or ``model.pt`` of a dynsweep
    classifier run; ``None`` or ``"auto"``: a classifier trained here once on ``dataset`` and
    cached."""
    if name == "classifier":
        if classifier in (None, "auto"):
            classifier = str(auto_classifier(dataset, data_dir))
        extractor = ClassifierFeatures(_load_model(classifier, tracking_uri))
        return extractor, extractor.name, lambda image: image
    if name != "inception":
        raise ValueError(f"extractor: expected 'inception' or 'classifier', got {name!r}")
    from cleanfid.features import build_feature_extractor

    try:
        module = build_feature_extractor("clean", device, use_dataparallel=False)
    except Exception as exc:  # offline: urllib errors
        raise DataError(
            f"FID extractor 'inception': could not load clean-fid's Inception weights "
            f"({type(exc).__name__}: {exc}). Without network access use extractor: classifier "
            f"with classifier: <run id or model.pt of a dynsweep classifier run>"
        ) from exc
    return module, "inception", None


def auto_classifier(dataset: str, data_dir: str, steps: int = 600) -> Path:
    """A ``classifier`` run's model.pt for ``dataset`` (MLP 256-128, Adam), trained once with
    dynsweep's classifier trainer and cached, so FID needs no network and no prior sweep."""
    from trainers.classifier.cached import trained_classifier
    from trainers.classifier.trainer import ClassifierConfig

    config = ClassifierConfig.model_validate(
        {
            "dataset": dataset,
            "model": {"widths": [256, 128]},
            "optimizer": {"name": "adam", "lr": 1e-3},
        }
    )
    return trained_classifier(config, steps, cache_dir() / "extractors", Path(data_dir))


def _load_model(ref: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A model file, or a run's ``model/model.pt`` from the store ``tracking_uri`` (the
    sweep's, passed by the analysis runner; else ``MLFLOW_TRACKING_URI`` or ./mlflow.db)."""
    path = Path(ref)
    if not path.exists():
        from mlflow.tracking import MlflowClient

        from analysis.io import default_uri, local_artifact

        path = local_artifact(MlflowClient(tracking_uri or default_uri()), ref, "model/model.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: unreadable model file ({type(exc).__name__}: {exc})") from exc


def features(
    batches: Iterator[torch.Tensor],
    n: int,
    batch_size: int,
    extractor,
    resize,
    device: torch.device = CPU,
) -> np.ndarray:
    """Features of ``n`` images (N×C×H×W in [0, 1]) through clean-fid's pipeline (the
    classifier extractor: the same values, computed on ``device`` without leaving it)."""
    from cleanfid import fid as cleanfid

    if isinstance(extractor, ClassifierFeatures):
        out, seen = [], 0
        for batch in batches:
            images = batch.to(device).float().clamp(0, 1) * 255
            out.append(extractor(images).float().cpu().numpy())
            seen += len(batch)
            if seen >= n:
                break
        return np.concatenate(out)[:n]

    padded = _rebatch(batches, batch_size)

    def generator(_: torch.Tensor) -> torch.Tensor:
        images = next(padded).float().clamp(0, 1) * 255
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    return cleanfid.get_model_features(
        generator,
        extractor,
        mode="clean",
        z_dim=1,
        num_gen=n,
        batch_size=batch_size,
        device=device,
        verbose=False,
        custom_fn_resize=resize,
    )


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """clean-fid's Fréchet distance between two (mean, covariance) pairs."""
    from cleanfid import fid as cleanfid

    return float(cleanfid.frechet_distance(*a, *b))


def fid_between(
    a: torch.Tensor, b: torch.Tensor, extractor, resize, batch_size=250, device=CPU
) -> float:
    """FID between two image sets (N×C×H×W in [0, 1])."""

    fa = features(iter(a.split(batch_size)), len(a), batch_size, extractor, resize, device)
    fb = features(iter(b.split(batch_size)), len(b), batch_size, extractor, resize, device)
    return frechet(statistics(fa), statistics(fb))


def reference_statistics(
    images: torch.Tensor,
    key: str,
    extractor,
    resize,
    batch_size: int,
    device: torch.device = CPU,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a dataset split's features, cached under ``key``."""
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        cached = np.load(path)
        return cached["mu"], cached["sigma"]
    batches = iter(images.split(batch_size))
    feats = features(batches, len(images), batch_size, extractor, resize, device)
    mu, sigma = statistics(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), mu=mu, sigma=sigma)
    os.replace(path.with_suffix(".tmp.npz"), path)
    return mu, sigma


def _diffusion(checkpoint: dict[str, Any], data_dir: str, workdir: Path, device: torch.device):
    from trainers.diffusion.trainer import load_exported

    return load_exported(checkpoint, Path(data_dir), workdir, device=device)


class FID:
    """Fréchet distance between ``samples`` EMA-model samples and the training split.

    Result metrics: ``fid``. Parameters: ``extractor`` (inception | classifier), ``classifier``
    (run id or model.pt, for the classifier extractor; default ``auto``: trained here once),
    sampling ``mode``, ``seed``, ``device`` (set by the runner from ``resources.analysis_gpus``).
    """

    input_kind: ClassVar[str] = "model"

    def __init__(
        self,
        samples: int = 1000,
        extractor: str = "inception",
        classifier: str | None = None,
        mode: str = "random",
        batch_size: int = 250,
        seed: int = 0,
        data_dir: str = "data",
        device: str = "cpu",
        tracking_uri: str | None = None,
    ) -> None:
        if samples < 2:
            raise ValueError("samples: FID needs at least 2 samples")
        self.tracking_uri = tracking_uri  # where a classifier named by run id is found
        self.samples, self.extractor, self.classifier = samples, extractor, classifier
        self.mode, self.batch_size, self.seed, self.data_dir = mode, batch_size, seed, data_dir
        self.device = torch.device(device)

    def fit(self, checkpoint: dict[str, Any]) -> StepResult:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = _diffusion(checkpoint, self.data_dir, Path(tmp), self.device)
        dataset = trainer.config.dataset
        extractor, name, resize = build_extractor(
            self.extractor, self.classifier, self.device, dataset, self.data_dir, self.tracking_uri
        )
        extractor = extractor.to(self.device)
        ref = reference_statistics(
            trainer.train_x,
            f"{dataset}-train-{name}",
            extractor,
            resize,
            self.batch_size,
            self.device,
        )
        sizes = [self.batch_size] * (self.samples // self.batch_size)
        sizes += [self.samples % self.batch_size] if self.samples % self.batch_size else []
        with Bar("fid: sampling", self.samples) as bar:

            def batches() -> Iterator[torch.Tensor]:
                for i, n in enumerate(sizes):
                    images = trainer.sample(n, self.mode, seed=self.seed + i).images
                    bar.update(n)
                    yield images

            feats = features(
                batches(), self.samples, self.batch_size, extractor, resize, self.device
            )
        value = frechet(statistics(feats), ref)
        return StepResult({"fid": value}, {"fid": {"extractor": [name], "samples": [self.samples]}})


def _rebatch(batches: Iterator[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """clean-fid asks for whole batches of ``size``; pad the last one (it drops the extra)."""
    for b in batches:
        yield b if len(b) == size else torch.cat([b, b[:1].expand(size - len(b), *b.shape[1:])])


class ELBO:
    """Negative ELBO of ``images`` validation images under a run's EMA model (nats / image
    and bits per dimension), with the prior, data and per-level terms as a table."""

    input_kind: ClassVar[str] = "model"

    def __init__(
        self, images: int = 256, seed: int = 0, data_dir: str = "data", device: str = "cpu"
    ) -> None:
        if images < 1:
            raise ValueError("images: at least 1")
        self.images, self.seed, self.data_dir = images, seed, data_dir
        self.device = torch.device(device)

    def fit(self, checkpoint: dict[str, Any]) -> StepResult:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = _diffusion(checkpoint, self.data_dir, Path(tmp), self.device)
        cfg = trainer.config
        terms = trainer.elbo(trainer.val_x[: self.images], self.seed)
        metrics = {
            "nats": terms.total,
            "bits_per_dim": terms.bits_per_dim,
            "prior_nats": terms.prior,
            "data_nats": terms.data,
        }
        levels = list(range(cfg.forward.K, 1, -1))
        table = {"k": levels, "nats": terms.levels, "mse": terms.mse[:-1]}
        return StepResult(metrics, {"levels": table})
