"""The figures of ``reproductions.weight_dynamics`` (what the original's notebooks draw, from the
runs): the layers' leading PC trajectories and the cumulative explained variance beside the
original's; EDM, S-map and CCM of the layers' PC1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EPOCH = 469


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(runs: list[dict], layers, nb01: dict, ks: list[int], nb02_fc2, folder: Path):
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    main = runs[0]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for j, (orig, *_) in enumerate(layers):
        ax = axes[0, j]
        steps, pcs = main["series"][orig]
        for i, pc in enumerate(pcs, 1):
            ax.plot(steps / EPOCH, pc, lw=0.8, label=f"PC{i}")
        ax.set_title(f"{orig}: leading PCs (seed {main['seed']})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("PC score (every 10 steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1, j]
        ax.plot(ks, nb01[orig], "ks", ms=6, label="original (50 epoch snapshots)")
        for r in runs:
            cum = r["nb01"][orig]
            ax.plot(range(1, len(cum) + 1), cum, "-", lw=1.2, label=f"dynsweep seed {r['seed']}")
        if orig.endswith("2.weight"):
            ax.plot(range(1, 11), np.cumsum(nb02_fc2), "r^", ms=5, label="original, every step")
            ax.plot(range(1, 11), main["per_step"][orig], "r-", lw=1, label="dynsweep, every step")
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(0.75, 1.005)
        ax.set_xlabel("components k")
        ax.set_ylabel("cumulative explained variance")
        ax.set_title(f"{orig}: PCA of the weight trajectory", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST MLP 784-256-256-10, Adam 3e-4, 100 epochs: weight trajectories")
    fig.tight_layout()
    pcs_path = folder / "fmnist_weight_pcs.png"
    fig.savefig(pcs_path, dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for k, kind in enumerate(("levels", "increments")):
        ax = axes[k]
        _, table = main["edm"][kind]["ccm"]
        pairs = table["pair"]
        for pair in dict.fromkeys(pairs):
            idx = [i for i, p in enumerate(pairs) if p == pair]
            ax.plot([table["lib_size"][i] for i in idx], [table["rho"][i] for i in idx], "o-",
                    ms=3, lw=1, label=pair)  # fmt: skip
        ax.set_xlabel("library size L")
        ax.set_ylabel("cross-map skill ρ")
        ax.set_title(f"CCM between layers' PC1 ({kind}), seed {main['seed']}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="a:b = b from a's manifold", title_fontsize=7)
    ax = axes[2]
    for kind, style in (("levels", "-"), ("increments", "--")):
        for orig, *_ in layers:
            t = main["edm"][kind][orig]["by_theta"]
            ax.plot(t["theta"], t["rho"], style, marker="o", ms=3, lw=1, label=f"{orig} {kind}")
    ax.set_xlabel("S-map localisation θ (0 = linear)")
    ax.set_ylabel("forecast skill ρ")
    ax.set_title(f"S-map of each layer's PC1, seed {main['seed']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    edm_path = folder / "fmnist_weight_edm.png"
    fig.savefig(edm_path, dpi=80)
    plt.close(fig)
    return [pcs_path, edm_path]
