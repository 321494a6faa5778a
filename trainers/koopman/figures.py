"""Figures of the Koopman study (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def rollout_plot(acc: list[float], classes: int, model: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = range(1, len(acc) + 1)
    ax.plot(steps, acc, marker="o", label=model)
    ax.axhline(1 / classes, color="grey", linestyle="--", label=f"chance (1/{classes})")
    ax.set(
        xlabel="rollout step t",
        ylabel="oracle accuracy",
        ylim=(0, 1.02),
        title=f"Ordered-digits rollout accuracy: {model}",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def eigenvalue_plot(eigenvalues: torch.Tensor, model: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    theta = torch.linspace(0, 2 * torch.pi, 200)
    ax.plot(theta.cos(), theta.sin(), color="grey", linewidth=0.8, label="unit circle")
    ax.scatter(eigenvalues.real, eigenvalues.imag, s=14, label="eigenvalues of K")
    ax.set(
        xlabel="Re λ", ylabel="Im λ", aspect="equal", title=f"Koopman operator spectrum: {model}"
    )
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
