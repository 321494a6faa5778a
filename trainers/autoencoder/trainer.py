"""The ``autoencoder`` trainer: how an autoencoder comes to reproduce a dataset's spectrum.

Per step: ``train/loss`` = MSE(x, x̂) + ``spectral_lambda`` × MSE between the centred |FFT| of
the eigenimages of the reconstructed batch and of the original batch. Per evaluation:
``val/loss``; the field u(j, r) of the reconstructions of the training images (eigenimages →
|FFT| / H → mean over each p-norm ring) compared with the dataset's own (computed once per
dataset and cached): ``val/spectral_error`` (mean over eigen-indices of the relative L1 error),
``val/transition_frame`` (the first eigen-index whose error exceeds ``transition_threshold``),
and ``val/sigma/<layer>``, each layer's spectral norm by power iteration. ``transition_error``
picks the error: ``ring`` (relative L1 error of u(j, ·)) or ``fft`` (the original's
``generate_fft_mse_pdf`` quantity: the squared difference of the two centred |FFT2| / H of
eigenimage j, summed over the frequencies, i.e. its MSE × H·W; the dataset's eigenimage has
spectral energy 1, so 0 = identical, about 1 = unrelated). ``val/rank``: the numerical rank of
the reconstructions (singular values above ``rank_tol`` × the largest), where the
reconstructions' eigenimages turn into arbitrary null-space vectors.

Probes (record them with ``loop.record``): ``spectrum`` (u(j, r) of the reconstructions,
k×R values, row-major: eigen-index j, then ring r), ``spectral_error`` (k values),
``layer_norms`` (one per layer) and ``weights``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from trainers.autoencoder import spectra
from trainers.autoencoder.model import Autoencoder, AutoencoderModel
from trainers.autoencoder.spectra import SpectraConfig
from trainers.base import Context, Trainer, TrainerConfig, parameter_columns
from trainers.data import DATASETS, Batches, image_shape, load_dataset

# Ring geometry and how many eigenimages to follow, per dataset (used where the config's
# ``spectra`` section leaves a field out). MNIST and Fashion-MNIST: the original's
# ``get_radial_int_settings`` (p, smoothing, radius_mult); digits (not in the original): its
# fallback, circles.
SPECTRA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"eigenimages": 32, "p": 2.0, "half_width": 0.5, "radius_mult": 1.0},
    "mnist": {"eigenimages": 64, "p": 2.0, "half_width": 0.5, "radius_mult": 1.0},
    "fashion_mnist": {"eigenimages": 64, "p": 1.0, "half_width": 0.5, "radius_mult": 1.0},
}


class AutoencoderConfig(TrainerConfig):
    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
    val_fraction: float = Field(0.2, gt=0, lt=1)
    batch_size: int = Field(64, ge=2)
    model: AutoencoderModel = AutoencoderModel()
    lr: float = Field(1e-3, gt=0)
    spectral_lambda: float = Field(0.0, ge=0)
    spectra: SpectraConfig = SpectraConfig()
    transition_threshold: float = Field(0.5, gt=0)
    transition_error: Literal["ring", "fft"] = "ring"
    rank_tol: float = Field(1e-4, gt=0, lt=1)
    spectrum_images: int = Field(2000, ge=2)  # training images whose spectra are followed

    @model_validator(mode="before")
    @classmethod
    def _dataset_spectra(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = data.get("spectra") or {}
            if isinstance(given, dict):
                defaults = SPECTRA_DEFAULTS.get(data.get("dataset", "digits"), {})
                data = {**data, "spectra": {**defaults, **given}}
        return data


class AutoencoderTrainer(Trainer):
    Config = AutoencoderConfig
    probes = ("weights", "spectrum", "spectral_error", "layer_norms")
    config: AutoencoderConfig

    @classmethod
    def probe_sizes(cls, config: AutoencoderConfig) -> dict[str, dict[str, int]]:
        shape = image_shape(config.dataset)
        rings = len(spectra.ring_masks(shape[1:], config.spectra))
        k = min(config.spectra.eigenimages, shape[1] * shape[2])
        with torch.device("meta"):
            model = Autoencoder(config.model, shape)
        return {
            "weights": {n: p.numel() for n, p in model.named_parameters()},
            "spectrum": {"spectrum": k * rings},
            "spectral_error": {"spectral_error": k},
            "layer_norms": {name: 1 for name in model.linear_layers()},
        }

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        (xt, _), (xv, _) = load_dataset(cfg.dataset, ctx.data_dir, cfg.val_fraction, ctx.seed)
        self.train_x, self.val_x = xt.to(self.device), xv.to(self.device)
        self.spectrum_x = self.train_x[: cfg.spectrum_images]
        self.steps_done, self.error_history = 0, []  # (step, spectral error) per evaluation
        self.model = Autoencoder(cfg.model, tuple(xt.shape[1:])).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.masks = spectra.ring_masks(tuple(xt.shape[-2:]), cfg.spectra).to(self.device)
        self.target = self._dataset_field(ctx.data_dir)
        self.target_fft = self._fft_of(self.spectrum_x) if cfg.transition_error == "fft" else None
        self.vectors = {
            name: F.normalize(
                torch.randn(w[0].numel(), generator=torch.Generator().manual_seed(i)), dim=0
            ).to(self.device)
            for i, (name, w) in enumerate(self.model.linear_layers().items())
        }
        self.batches = Batches(len(self.train_x), cfg.batch_size, ctx.seed + 1)
        self._cache: dict[str, torch.Tensor] = {}

    def _dataset_field(self, data_dir: Path) -> torch.Tensor:
        """u(j, r) of the dataset's own images, computed once and cached beside the data."""
        cfg = self.config
        # "ring-mean": u is the mean of |F| / H over each ring (fields cached before were
        # sums of |F| normalised to 1, and must not be read back).
        key = hashlib.sha256(
            f"ring-mean|{cfg.dataset}|{cfg.spectrum_images}|{cfg.spectra.model_dump_json()}".encode()
        ).hexdigest()[:16]
        path = Path(data_dir) / "spectra" / f"{cfg.dataset}-{key}.pt"
        if path.exists():
            return torch.load(path, weights_only=True).to(self.device)
        u = spectra.field(self.spectrum_x, cfg.spectra, self.masks)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(u.cpu(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        return u

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def _batch(self) -> torch.Tensor:
        return self.train_x[self.batches.next().to(self.device)]

    def loss(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(recon, x)
        if self.config.spectral_lambda > 0:
            k = min(self.config.spectra.eigenimages, len(x))
            ours = spectra.centred_fft(spectra.eigenimages(recon, k))
            theirs = spectra.centred_fft(spectra.eigenimages(x, k))
            loss = loss + self.config.spectral_lambda * F.mse_loss(ours, theirs)
        return loss

    def step(self) -> dict[str, float]:
        self.model.train()
        self._cache.clear()
        x = self._batch()
        loss = self.loss(x, self.model(x))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        return {"train/loss": loss.item()}

    def _fft_of(self, x: torch.Tensor, keep: str | None = None) -> torch.Tensor:
        """Centred |FFT2| / H of the leading eigenimages of ``x`` (k×H×W); ``keep`` caches
        the numerical rank of ``x`` under that name."""
        k = min(self.config.spectra.eigenimages, len(x), x[0].numel())
        s, eig = spectra.singular(x, k, self.config.spectra.center)
        if keep:
            self._cache[keep] = spectra.numerical_rank(s, self.config.rank_tol)
        return spectra.centred_fft(eig)

    @torch.no_grad()
    def _spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        """u(j, r) of the reconstructions and its per-eigen-index error (``transition_error``)."""
        if "spectrum" not in self._cache:
            self.model.eval()
            f = self._fft_of(self.model(self.spectrum_x), keep="rank")
            u = spectra.ring_integrals(f, self.masks)
            k = min(len(u), len(self.target))
            if self.target_fft is not None:
                err = spectra.fft_error(f[:k], self.target_fft[:k])
            else:
                err = (u[:k] - self.target[:k]).abs().sum(1) / self.target[:k].abs().sum(1)
            self._cache["spectrum"], self._cache["error"] = u, err
        return self._cache["spectrum"], self._cache["error"]

    def _layer_norms(self) -> dict[str, float]:
        norms = {}
        for name, weight in self.model.linear_layers().items():
            norms[name], self.vectors[name] = spectra.spectral_norm(weight, self.vectors[name])
        return norms

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        metrics = {"val/loss": float(F.mse_loss(self.model(self.val_x), self.val_x))}
        _, error = self._spectrum()
        self.error_history.append((self.steps_done, error.cpu().numpy()))
        metrics["val/spectral_error"] = float(error.mean())
        metrics["val/rank"] = float(self._cache["rank"])
        metrics["val/transition_frame"] = float(
            spectra.transition_frame(error, self.config.transition_threshold)
        )
        metrics.update({f"val/sigma/{k}": v for k, v in self._layer_norms().items()})
        return metrics

    @torch.no_grad()
    def write_artifacts(self, folder: Path) -> list[Path]:
        from trainers.figures import reconstructions, spectral_error_evolution

        self.model.eval()
        x = self.val_x[:8]
        recon = self.model(x).clamp(x.min(), x.max())
        paths = [
            reconstructions(
                x.cpu().numpy(), recon.cpu().numpy(), self.config.dataset,
                folder / "reconstructions.png",
            )
        ]  # fmt: skip
        if self.error_history:
            threshold = self.config.transition_threshold
            path = folder / "spectral_error.png"
            paths.append(spectral_error_evolution(self.error_history, threshold, path))
        return paths

    def probe(self, name: str) -> torch.Tensor | list[torch.Tensor]:
        if name == "weights":
            return [p.detach() for p in self.model.parameters()]
        if name == "spectrum":
            return self._spectrum()[0].reshape(-1)
        if name == "spectral_error":
            return self._spectrum()[1]
        if name == "layer_norms":
            return torch.tensor(list(self._layer_norms().values()))
        raise KeyError(name)

    def probe_columns(self, name: str) -> dict[str, list[int]]:
        if name == "weights":
            return parameter_columns(self.model)
        if name == "layer_norms":
            return {n: [i, i + 1] for i, n in enumerate(self.model.linear_layers())}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            "vectors": dict(self.vectors),
            "steps": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_done = state.get("steps", 0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.batches.load_state_dict(state["batches"])
        self.vectors = dict(state["vectors"])

    def export(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}
