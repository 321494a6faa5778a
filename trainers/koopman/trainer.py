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

Metrics: ``train/loss``, ``val/loss``, ``val/rollout_acc_TT``
(t = 1..T), ``val/rollout_acc_mean``, ``val/eig_abs_i`` (moduli of K's leading eigenvalues).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from trainers.base import Context, Trainer, TrainerConfig
from trainers.data import DATASETS
from trainers.koopman import losses
from trainers.koopman.data import oracle, ordered_splits
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
    rank: int = Field(16, ge=1)  # linear: principal components kept
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


class KoopmanTrainer(Trainer):
    Config = KoopmanConfig
    probes = ("operator",)
    config: KoopmanConfig

    @classmethod
    def prepare(cls, configs: list[KoopmanConfig], data_dir: Path) -> None:
        super().prepare(configs, data_dir)
        for c in configs:  # trains and caches each oracle once, before any trial starts
            oracle(c.dataset, data_dir, c.oracle_steps)

    def setup(self, ctx: Context) -> None:
        cfg = self.config
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        splits = ordered_splits(cfg.dataset, ctx.data_dir, cfg.classes, ctx.seed)
        self.data = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in splits.items()}
        self.shape = tuple(self.data["train"][0].shape[1:])
        self.oracle = oracle(cfg.dataset, ctx.data_dir, cfg.oracle_steps).to(self.device)
        d = self.data["train"][0][0].numel()
        self.params: list[nn.Parameter] = []
        if cfg.model not in CLOSED_FORM:
            self.encoder = mlp([d, *cfg.hidden, cfg.latent_dim]).to(self.device)
            modules = [self.encoder]
            if cfg.model == "dynamical_ae":
                self.decoder = mlp([cfg.latent_dim, *cfg.hidden[::-1], d]).to(self.device)
                self.latent_op = nn.Linear(cfg.latent_dim, cfg.latent_dim, bias=False)
                nn.init.eye_(self.latent_op.weight)
                modules += [self.decoder, self.latent_op.to(self.device)]
            self.modules = nn.ModuleList(modules)
            self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=cfg.lr)
        x = self.data["train"][0].flatten(1)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-3)
        if cfg.model == "linear":
            _, _, vh = torch.linalg.svd((x - self.mean) / self.std, full_matrices=False)
            self.components = vh[: cfg.rank].T
        self.generator = torch.Generator().manual_seed(ctx.seed + 1)
        self.last_rollout: list[float] | None = None  # of the latest evaluation
        self.fit_operator()

    # --- features, operator, rollout ------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        cfg, flat = self.config, x.flatten(1)
        if cfg.model == "linear":
            return (flat - self.mean) / self.std @ self.components
        if cfg.model == "classifier_features":
            return self.oracle.hidden(x)[-1].flatten(1)
        z = self.encoder(flat)
        if cfg.constant_feature and cfg.model != "dynamical_ae":
            z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        return z

    @torch.no_grad()
    def fit_operator(self) -> None:
        """K and the pixel readout from the training pairs (the DAE keeps its own)."""
        x, _ = self.data["train"]
        phi = self.features(x)
        if self.config.model == "dynamical_ae":
            self.K = self.latent_op.weight.T.detach().clone()
        else:
            rank, lam = self.config.operator_rank, self.config.ridge
            if rank is None or rank >= phi.shape[1]:
                self.K = losses.ridge(phi[:-1], phi[1:], lam)
            else:
                self.K = losses.reduced_rank_ridge(phi[:-1], phi[1:], lam, rank)
            self.readout = losses.ridge(phi, x.flatten(1), self.config.ridge)
        self.fit_loss = float(((phi[:-1] @ self.K - phi[1:]) ** 2).mean())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.model == "dynamical_ae":
            return self.decoder(z).reshape(-1, *self.shape)
        return (z @ self.readout).reshape(-1, *self.shape)

    @torch.no_grad()
    def rollout_accuracy(self, part: str = "test") -> list[float]:
        """Oracle accuracy after t = 1..T steps. ``reencode`` (kooplearn's protocol): each step
        encodes the current image, applies K once and decodes; ``latent``: z ↦ z K^t, decoded."""
        x, y = self.data[part]
        z, c, acc = self.features(x), self.config.classes, []
        for t in range(1, self.config.rollout_steps + 1):
            image = self.decode(z @ self.K).clamp(0, 1)
            z = self.features(image) if self.config.rollout == "reencode" else z @ self.K
            predicted = self.oracle(image)[:, :c].argmax(1)
            acc.append(float((predicted == (y + t) % c).float().mean()))
        return acc

    # --- the loop's contract ---------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.model == "vamp":
            fx, fy = self.features(x), self.features(y)
            return losses.vamp_loss(fx, fy, cfg.vamp_p, cfg.center, cfg.vamp_eps)
        if cfg.model == "spectral_contrastive":
            return losses.spectral_contrastive_loss(self.features(x), self.features(y))
        flat_x, flat_y = x.flatten(1), y.flatten(1)
        return losses.dynamical_ae_loss(
            flat_x, flat_y, self.encoder, self.decoder, self.latent_op, cfg.ae_weights
        )

    def step(self) -> dict[str, float]:
        if self.config.model in CLOSED_FORM:
            return {"train/loss": self.fit_loss}
        x, _ = self.data["train"]
        idx = torch.randint(0, len(x) - 1, (self.config.batch_size,), generator=self.generator)
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
        if self.config.model not in CLOSED_FORM:
            state["modules"] = self.modules.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
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
