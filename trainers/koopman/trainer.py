"""The ``koopman`` trainer: evolution operators on ordered digits (the kooplearn study).

A state is an image; its successor is an image of the next class (mod c). Each model gives a
feature map φ; a ridge operator K (φ(x_{t+1}) ≈ φ(x_t) K) and a ridge readout back to pixels
are fitted on the training pairs (the dynamical autoencoder uses its own operator and decoder).
Evaluation rolls out ``rollout_steps`` steps from every test image: accuracy at step t is the
fraction whose prediction the oracle classifies as (label + t) mod c (chance: 1/c).

Models: ``linear`` (principal-component regression on standardised pixels, rank ``rank``),
``classifier_features`` (the oracle CNN's last hidden layer), ``vamp`` (an MLP encoder trained on
the VAMP-``vamp_p`` score), ``spectral_contrastive`` and ``dynamical_ae`` (encoder, decoder and a
linear latent operator trained together). The first two are closed-form: fitted in ``setup``,
their steps only report the fit.

The fitted operator is a ridge regression with ``ridge`` = 1e-6 (kooplearn's ``Ridge`` default),
full rank unless ``operator_rank`` asks for kooplearn's reduced-rank estimator. The ridge is
absolute and VAMP's features are scale-free (their covariance eigenvalues sit near 1e-3 here),
so a larger one shrinks K towards 0 and rollouts decay to the mean image
(docs/studies/koopman.md). ``rollout``: ``latent`` iterates K on the features and decodes
each step; ``reencode`` (kooplearn's protocol) decodes, then re-encodes the predicted image.

Losses, as in kooplearn unless asked otherwise: VAMP-``vamp_p`` with centred covariances
(``center``), computed without a ridge (``vamp_eps`` = 0: least squares / pseudo-inverse);
the spectral contrastive loss of the encoder's output; the dynamical autoencoder's three MSE
terms weighted by ``ae_weights`` = (α_rec, α_lin, α_pred). ``constant_feature`` appends a
constant 1 to the learned features, in the losses and the fitted operator (deeptime's
convention): centred VAMP is unchanged by it, uncentred VAMP then counts the constant function
(score + 1), and the spectral contrastive loss becomes a different objective.

kooplearn's ordered-MNIST example as written (``configs/ordered_mnist_koopman_repro.yaml``):
``split: test`` / ``order: interleaved`` / ``sizes`` (the data, ``data.py``),
``architecture: cnn`` (its CNN encoder and, for the autoencoder, decoder; ``models.py``),
``normalize`` (L2-normalised features), ``lagged_head`` (a bias-free linear layer on the t + 1
features inside the loss), ``optimizer: adamw``, ``sampling: epochs`` (shuffled passes over the
pairs, as its DataLoader), ``oracle: kooplearn`` (its CNN oracle trained on the training part;
``classifier_features`` are then that oracle's outputs, as its ``FeatureMapEmbedder``),
``estimator: kooplearn`` (its reduced-rank ``Ridge`` of rank ``operator_rank`` on uncentred
covariances, refitted for every model, the autoencoder included; images are predicted as the
regression of the next image on the features through the same rank-r projection; the linear
model's features are the pixels standardised as scikit-learn's ``StandardScaler`` when ``rank``
is None), ``latent_op_init: default`` (torch's init of the autoencoder's operator instead of the
identity) and ``clamp: false`` (the predicted images go to the oracle unclipped).

Metrics: ``train/loss``, ``val/loss``, ``val/oracle_acc``, ``val/rollout_acc_TT``
(t = 1..T), ``val/rollout_acc_mean``, ``val/eig_abs_i`` (moduli of K's leading eigenvalues).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from trainers.base import Context, Trainer, TrainerConfig
from trainers.data import DATASETS, Batches
from trainers.koopman import losses
from trainers.koopman.data import kooplearn_oracle, load_images, oracle, ordered_splits
from trainers.koopman.models import CNNDecoder, CNNEncoder, kooplearn_ridge_basis
from trainers.nets import mlp

CLOSED_FORM = ("linear", "classifier_features")


class KoopmanConfig(TrainerConfig):
    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
    classes: int = Field(5, ge=2, le=10)
    model: Literal[
        "linear", "classifier_features", "vamp", "spectral_contrastive", "dynamical_ae"
    ] = "vamp"
    latent_dim: int = Field(16, ge=1)
    hidden: tuple[int, ...] = (128,)
    rank: int | None = Field(16, ge=1)  # linear: principal components kept; None: all pixels
    ridge: float = Field(1e-6, gt=0)  # of the fitted operator and readout (kooplearn's alpha)
    operator_rank: int | None = Field(None, ge=1)  # reduced-rank operator; None: full ridge
    rollout: Literal["latent", "reencode"] = "latent"
    # The losses: kooplearn's by default (see the module docstring)
    vamp_p: Literal[1, 2] = 2
    center: bool = True  # vamp: centre the covariances (kooplearn's VampLoss default)
    constant_feature: bool = False  # vamp, spectral_contrastive: append 1 to the features
    vamp_eps: float = Field(0.0, ge=0)  # vamp: ridge on C_x, C_y; 0: kooplearn's lstsq/pinv
    ae_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # dynamical_ae: α_rec, lin, pred
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=4)
    rollout_steps: int = Field(15, ge=1)
    oracle_steps: int = Field(800, ge=1)
    # kooplearn's ordered-MNIST example (see the module docstring); defaults keep the above
    split: Literal["all", "test"] = "all"
    order: Literal["shuffled", "interleaved"] = "shuffled"
    sizes: tuple[int, int, int] | None = None  # train, val, test images; None: 3/5, 1/5, 1/5
    architecture: Literal["mlp", "cnn"] = "mlp"
    normalize: bool = False
    lagged_head: bool = False
    optimizer: Literal["adam", "adamw"] = "adam"
    sampling: Literal["random", "epochs"] = "random"
    oracle: Literal["dynsweep", "kooplearn"] = "dynsweep"
    estimator: Literal["ridge", "kooplearn"] = "ridge"
    latent_op_init: Literal["identity", "default"] = "identity"
    clamp: bool = True

    @field_validator("sizes")
    @classmethod
    def _positive_sizes(cls, v):
        if v is not None and min(v) < 2:
            raise ValueError(f"each of train, val, test needs at least 2 images, got {list(v)}")
        return v


class KoopmanTrainer(Trainer):
    Config = KoopmanConfig
    probes = ("operator",)
    config: KoopmanConfig

    @classmethod
    def prepare(cls, configs: list[KoopmanConfig], data_dir: Path) -> None:
        for c in configs:  # data, and each oracle trained and cached once, before trials start
            load_images(c.dataset, data_dir, c.split)
            if c.oracle == "dynsweep":
                oracle(c.dataset, data_dir, c.oracle_steps)
            elif c.order == "interleaved":  # the kooplearn oracle's data does not vary by seed
                cls._kooplearn_oracle(c, data_dir, ordered_splits(*cls._data_args(c, data_dir)))

    @staticmethod
    def _data_args(c: KoopmanConfig, data_dir: Path, seed: int = 0) -> tuple:
        return (c.dataset, data_dir, c.classes, seed, c.split, c.order, c.sizes)

    @staticmethod
    def _kooplearn_oracle(c: KoopmanConfig, data_dir: Path, splits: dict, seed: int = 0):
        key = f"{c.dataset}-{c.split}-{c.order}-{c.classes}-{'x'.join(map(str, c.sizes or ()))}"
        key += f"-s{seed}" if c.order == "shuffled" else ""
        return kooplearn_oracle(splits["train"], splits["val"], c.classes, key)

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        splits = ordered_splits(*self._data_args(cfg, ctx.data_dir, ctx.seed))
        self.data = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in splits.items()}
        self.shape = tuple(self.data["train"][0].shape[1:])
        if cfg.oracle == "kooplearn":
            net, self.oracle_acc = self._kooplearn_oracle(cfg, ctx.data_dir, splits, ctx.seed)
        else:
            net, self.oracle_acc = oracle(cfg.dataset, ctx.data_dir, cfg.oracle_steps), None
        self.oracle = net.to(self.device)
        d = self.data["train"][0][0].numel()
        self.params: list[nn.Parameter] = []
        if cfg.oracle == "kooplearn":  # as its notebook: the seed set just before the networks
            torch.manual_seed(ctx.seed)
        if cfg.model not in CLOSED_FORM:
            if cfg.architecture == "cnn":
                self.encoder = CNNEncoder(cfg.latent_dim, self.shape[0], self.shape[-1])
            else:
                self.encoder = mlp([d, *cfg.hidden, cfg.latent_dim])
            modules = [self.encoder.to(self.device)]
            if cfg.model == "dynamical_ae":
                if cfg.architecture == "cnn":
                    self.decoder = CNNDecoder(cfg.latent_dim, self.shape[-1]).to(self.device)
                else:
                    self.decoder = mlp([cfg.latent_dim, *cfg.hidden[::-1], d]).to(self.device)
                self.latent_op = nn.Linear(cfg.latent_dim, cfg.latent_dim, bias=False)
                if cfg.latent_op_init == "identity":
                    nn.init.eye_(self.latent_op.weight)
                modules += [self.decoder, self.latent_op.to(self.device)]
            self.head = None
            if cfg.lagged_head and cfg.model != "dynamical_ae":
                self.head = nn.Linear(cfg.latent_dim, cfg.latent_dim, bias=False).to(self.device)
                modules.append(self.head)
            self.modules = nn.ModuleList(modules)
            opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
            self.optimizer = opt(self.modules.parameters(), lr=cfg.lr)
        x = self.data["train"][0].flatten(1)
        if cfg.estimator == "kooplearn":  # scikit-learn's StandardScaler: 1/N, constant → 1
            std = x.std(0, correction=0)
            self.mean, self.std = x.mean(0), torch.where(std > 0, std, torch.ones_like(std))
        else:
            self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-3)
        if cfg.model == "linear" and cfg.rank is not None:
            _, _, vh = torch.linalg.svd((x - self.mean) / self.std, full_matrices=False)
            self.components = vh[: cfg.rank].T
        self.generator = torch.Generator().manual_seed(ctx.seed + 1)
        self.batches = Batches(len(x) - 1, cfg.batch_size, ctx.seed + 1)
        self.last_rollout: list[float] | None = None  # of the latest evaluation
        self.fit_operator()

    @property
    def steps_per_epoch(self) -> int | None:
        return len(self.batches) if self.config.sampling == "epochs" else None

    # --- features, operator, rollout ------------------------------------------------------
    def features(self, x: torch.Tensor, lagged: bool = False) -> torch.Tensor:
        cfg, flat = self.config, x.flatten(1)
        if cfg.model == "linear":
            z = (flat - self.mean) / self.std
            return z if cfg.rank is None else z @ self.components
        if cfg.model == "classifier_features":
            if cfg.oracle == "kooplearn":  # its FeatureMapEmbedder: the oracle's outputs
                return self.oracle(x)
            return self.oracle.hidden(x)[-1].flatten(1)
        z = self.encoder(x if cfg.architecture == "cnn" else flat)
        if cfg.normalize and cfg.model != "dynamical_ae":
            z = nn.functional.normalize(z, dim=-1)
        if lagged and cfg.lagged_head:  # the head is the loss's, on the t + 1 side only
            z = self.head(z)
        if cfg.constant_feature and cfg.model != "dynamical_ae":
            z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        return z

    @torch.no_grad()
    def fit_operator(self) -> None:
        """K and the pixel readout from the training pairs (the DAE keeps its own)."""
        x, _ = self.data["train"]
        phi = self.features(x)
        cfg = self.config
        if cfg.estimator == "kooplearn":
            self._fit_kooplearn(phi, x)
        elif cfg.model == "dynamical_ae":
            self.K = self.latent_op.weight.T.detach().clone()
        else:
            rank, lam = cfg.operator_rank, cfg.ridge
            if rank is None or rank >= phi.shape[1]:
                self.K = losses.ridge(phi[:-1], phi[1:], lam)
            else:
                self.K = losses.reduced_rank_ridge(phi[:-1], phi[1:], lam, rank)
            self.readout = losses.ridge(phi, x.flatten(1), cfg.ridge)
        self.fit_loss = float(((phi[:-1] @ self.K - phi[1:]) ** 2).mean())

    def _fit_kooplearn(self, phi: torch.Tensor, x: torch.Tensor) -> None:
        """kooplearn's Ridge: K = U Uᵀ C_XY; the next image (the linear model: its standardised
        pixels) regressed on φ through U Uᵀ; the autoencoder decodes φ K instead."""
        cfg, f = self.config, phi.double().cpu().numpy()
        u = kooplearn_ridge_basis(f[:-1], f[1:], cfg.ridge, cfg.operator_rank or f.shape[1])
        self.operator_rank = u.shape[1]  # kooplearn drops numerically null directions
        projector = torch.from_numpy(u @ u.T).to(phi)
        n = len(phi) - 1
        self.K = projector @ (phi[:-1].T @ phi[1:] / n)
        if cfg.model != "dynamical_ae":
            target = x.flatten(1)[1:]
            if cfg.model == "linear":
                target = (target - self.mean) / self.std
            self.lagged_readout = projector @ (phi[:-1].T @ target / n)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.model == "dynamical_ae":
            return self.decoder(z).reshape(-1, *self.shape)
        return (z @ self.readout).reshape(-1, *self.shape)

    def predict_image(self, z: torch.Tensor) -> torch.Tensor:
        """The image one step ahead of features ``z``."""
        cfg = self.config
        if cfg.estimator != "kooplearn" or cfg.model == "dynamical_ae":
            return self.decode(z @ self.K)
        flat = z @ self.lagged_readout
        if cfg.model == "linear":  # back from standardised pixels
            flat = flat * self.std + self.mean
        return flat.reshape(-1, *self.shape)

    @torch.no_grad()
    def rollout_accuracy(self, part: str = "test") -> list[float]:
        """Oracle accuracy after t = 1..T steps (the mean of :meth:`rollout_hits`)."""
        return [float(hits.float().mean()) for hits in self.rollout_hits(part)]

    @torch.no_grad()
    def rollout_hits(self, part: str = "test") -> torch.Tensor:
        """[T, N]: whether the oracle reads the right digit in the image predicted t = 1..T
        steps ahead of each of the part's N images. ``reencode`` (kooplearn's protocol): each
        step encodes the current image, predicts the next one and decodes; ``latent``:
        z ↦ z K^t."""
        x, y = self.data[part]
        z, c, hits = self.features(x), self.config.classes, []
        for t in range(1, self.config.rollout_steps + 1):
            image = self.predict_image(z)
            if self.config.clamp:
                image = image.clamp(0, 1)
            z = self.features(image) if self.config.rollout == "reencode" else z @ self.K
            predicted = self.oracle(image)[:, :c].argmax(1)
            hits.append(predicted == (y + t) % c)
        return torch.stack(hits)

    # --- the loop's contract ---------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.model == "vamp":
            fx, fy = self.features(x), self.features(y, lagged=True)
            return losses.vamp_loss(fx, fy, cfg.vamp_p, cfg.center, cfg.vamp_eps)
        if cfg.model == "spectral_contrastive":
            fx, fy = self.features(x), self.features(y, lagged=True)
            return losses.spectral_contrastive_loss(fx, fy)
        flat_x, flat_y = x.flatten(1), y.flatten(1)
        if cfg.architecture == "cnn":

            def encode(flat):
                return self.encoder(flat.reshape(-1, *self.shape))

            def decode(z):
                return self.decoder(z).flatten(1)

        else:
            encode, decode = self.encoder, self.decoder
        return losses.dynamical_ae_loss(
            flat_x, flat_y, encode, decode, self.latent_op, cfg.ae_weights
        )

    def step(self) -> dict[str, float]:
        if self.config.model in CLOSED_FORM:
            return {"train/loss": self.fit_loss}
        x, _ = self.data["train"]
        if self.config.sampling == "epochs":
            idx = self.batches.next()
        else:
            n, size = len(x) - 1, (self.config.batch_size,)
            idx = torch.randint(0, n, size, generator=self.generator)
        idx = idx.to(self.device)
        self.modules.train()
        loss = self.loss(x[idx], x[idx + 1])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"train/loss": loss.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.config.model not in CLOSED_FORM:
            self.modules.eval()
            self.fit_operator()
            x, _ = self.data["val"]
            val_loss = float(self.loss(x[:-1], x[1:]))
        else:
            val_loss = self.fit_loss
        acc = self.rollout_accuracy()
        self.last_rollout = acc
        metrics = {"val/loss": val_loss, "val/rollout_acc_mean": sum(acc) / len(acc)}
        metrics.update({f"val/rollout_acc_{t:02d}": a for t, a in enumerate(acc, 1)})
        if self.oracle_acc is not None:
            metrics["val/oracle_acc"] = self.oracle_acc
        moduli = torch.linalg.eigvals(self.K.double()).abs().sort(descending=True).values
        metrics.update({f"val/eig_abs_{i}": float(v) for i, v in enumerate(moduli[:5], 1)})
        return metrics

    def probe(self, name: str) -> torch.Tensor:
        if name == "operator":
            return self.K.reshape(-1)
        raise KeyError(name)

    def write_artifacts(self, folder: Path) -> list[Path]:
        from trainers.koopman.figures import eigenvalue_plot, rollout_plot

        acc = self.last_rollout or self.rollout_accuracy()
        eig = torch.linalg.eigvals(self.K.double()).cpu()
        return [
            rollout_plot(acc, self.config.classes, self.config.model, folder / "rollout.png"),
            eigenvalue_plot(eig, self.config.model, folder / "eigenvalues.png"),
        ]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        state["batches"] = self.batches.state_dict()
        if self.config.model not in CLOSED_FORM:
            state["modules"] = self.modules.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "batches" in state:
            self.batches.load_state_dict(state["batches"])
        if self.config.model not in CLOSED_FORM:
            self.modules.load_state_dict(state["modules"])
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
            self.fit_operator()

    def export(self) -> dict[str, Any]:
        state = {"K": self.K}
        if self.config.model not in CLOSED_FORM:
            state["modules"] = self.modules.state_dict()
        return state
