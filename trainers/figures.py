"""Figures trainers keep with their runs (matplotlib, headless): autoencoder reconstructions
and the evolution of its eigen-spectrum error, and a path's validation loss along t."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reconstructions(images: np.ndarray, recon: np.ndarray, dataset: str, path: Path) -> Path:
    """Validation images (top row) and the autoencoder's reconstructions (bottom row)."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    for row, (label, batch) in enumerate((("input", images), ("reconstruction", recon))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(batch[i].reshape(batch.shape[-2:]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"Autoencoder on {dataset}: validation images and their reconstructions")
    return _save(fig, path)


def spectral_error_evolution(
    history: list[tuple[int, np.ndarray]], threshold: float, path: Path
) -> Path:
    """Relative error of each eigen-image's spectrum, one line per evaluation (dark → light as
    training goes on): the index where it crosses ``threshold`` is the transition frame."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = plt.cm.viridis(np.linspace(0, 1, len(history)))
    last = len(history) - 1
    for i, ((step, error), colour) in enumerate(zip(history, colours)):
        label = f"step {step}" if i in (0, last // 2, last) else "_nolegend_"
        ax.plot(np.arange(1, len(error) + 1), error, color=colour, lw=1.2, label=label)
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("eigen-image index j (1 = largest variance)")
    ax.set_ylabel("relative spectral error")
    ax.set_title(
        "Autoencoder: spectral error of each eigen-image,\none line per evaluation "
        "(dark: early, light: late)",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def loss_along_t(t: np.ndarray, loss: np.ndarray, label: str, path: Path) -> Path:
    """The validation loss along the curve's parameter t (ends: the two networks)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(t, loss, lw=1.5)
    top = int(np.argmax(loss))
    ax.plot(
        t[top],
        loss[top],
        "o",
        color="tab:red",
        label=f"barrier {loss[top]:.4g} at t = {t[top]:.2f}",
    )
    ax.set_xlabel("position t along the curve (0 and 1: its ends)")
    ax.set_ylabel(label)
    ax.set_title("Loss along the learned path in weight space")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
