"""Weight trajectories of an MLP on Fashion-MNIST (jimzers/edm_nn), reproduced: the study
page's tables and figures from the finished runs of ``configs/fashion_mnist_weights_repro.yaml``.

    python -m reproductions.weight_dynamics [--tracking-uri URI] [--sweep NAME] [--figures DIR]

Prints (markdown) the original's numbers beside dynsweep's: learning curve, per-layer PCA of
the weight trajectory as the original's two notebooks compute it (50 epoch snapshots; every
step, 10 components), the measurements behind the differences (the random projection's
effect, snapshots vs steps, per-class accuracy), then EDM, S-map and CCM on the layers' leading
PC series; writes ``fmnist_weight_pcs.png`` and ``fmnist_weight_edm.png``.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from analysis.edm import CrossMapping, EmbedDimension, SMapNonlinearity
from analysis.io import default_uri, find_runs, load_trajectory, local_artifact, metric_history
from analysis.spectra import WeightPCA

EXPERIMENT = "fashion_mnist_weights_repro"
EPOCH = 469  # steps per epoch: 60,000 images in batches of 128
# (original name, dynsweep column label, recorded per-step trajectory, its weight_pca step)
LAYERS = [
    ("fc_layers.0.weight", "layers.1.0.weight", "fc0", "pca_fc0", "all"),
    ("fc_layers.1.weight", "layers.2.0.weight", "fc1", "pca_fc1", "all"),
    ("fc_layers.2.weight", "layers.3.weight", "fc2", "pca_fc2", "layers.3.weight"),
]
KS = [1, 2, 3, 4, 5, 10, 20]
# src/notebooks/01_analysis_psd.ipynb, cell 6 output: PCA (sklearn, centred) of 50 epoch-start
# snapshots (rows) x one layer's weights (columns); cumulative explained variance at k = KS.
NB01 = {
    "fc_layers.0.weight": [0.80617756, 0.9203049, 0.95536107, 0.97020245, 0.97785985,
                           0.9898628, 0.9952135],
    "fc_layers.1.weight": [0.88336825, 0.9557269, 0.977377, 0.9852309, 0.9887958,
                           0.99467164, 0.9975657],
    "fc_layers.2.weight": [0.94440633, 0.9775238, 0.98894674, 0.99323654, 0.9951274,
                           0.9979398, 0.99911386],
}  # fmt: skip
NB01_PCS99 = {
    "fc_layers.0.weight": "11–20",
    "fc_layers.1.weight": "6–10",
    "fc_layers.2.weight": "4",
}
# src/results/mnist_example/model/pca/fc_layers.2.weight.pkl (02_analysis_tsne_psd.ipynb cell
# 6-8): IncrementalPCA(10) over all 46,900 steps in batches of 469; explained_variance_ratio_.
# The pickles of fc_layers.0 / 1 are not in the repository's stored history.
NB02_FC2 = [0.95761, 0.02644, 0.00692, 0.00247, 0.00138, 0.00084, 0.00063, 0.0004, 0.00031, 0.00022]
# src/results/mnist_example/model/lightning_logs/version_0/metrics.csv, epoch 99 (step 46899)
CURVE = {"val/acc": 0.8887, "val/loss": 1.572655, "train/loss": 1.520435, "train/acc": 0.94125}


def pcs_for(cumulative: np.ndarray, fraction: float = 0.99) -> str:
    hit = np.flatnonzero(np.asarray(cumulative) >= fraction)
    return str(hit[0] + 1) if len(hit) else f"> {len(cumulative)}"


def rel(ours: float, theirs: float) -> str:
    return f"{(ours - theirs) / abs(theirs) * 100:+.1f} %"


def ratios(traj, label: str | None, components: int) -> np.ndarray:
    """Explained-variance ratios of one layer's rows, one batch: exact PCA (WeightPCA)."""
    n = len(traj.steps)
    step = WeightPCA(components=min(components, n // 2), batch=n, layers=[label] if label else None)
    result = step.fit(traj).metrics
    key = label or next(iter(traj.columns), "all")
    return np.array([result[f"{key}/explained_{i}"] for i in range(1, step.components + 1)])


def learning_curve(run_id: str, uri: str) -> dict[str, float]:
    out = {}
    for key in ("val/acc", "val/loss"):
        out[key] = float(metric_history(run_id, key, uri)[1][-1])
    for key in ("train/loss", "train/acc"):  # the last epoch's mean, as Lightning's *_epoch
        steps, values = metric_history(run_id, key, uri)
        out[key] = float(values[steps > steps[-1] - EPOCH].mean())
    return out


def per_class_accuracy(run_id: str, uri: str) -> np.ndarray:
    import torch

    from trainers.classifier.cached import load_classifier
    from trainers.idx import load_split

    path = local_artifact(MlflowClient(uri), run_id, "model/model.pt")
    model = load_classifier(torch.load(path, map_location="cpu", weights_only=True))
    x, y = load_split("fashion_mnist", Path("data"), "test")
    with torch.no_grad():
        pred = model(x).argmax(1)
    return np.array([(pred[y == c] == c).float().mean().item() for c in range(10)])


def scores(run_id: str, uri: str, step: str) -> dict[str, np.ndarray]:
    path = local_artifact(MlflowClient(uri), run_id, f"analysis/{step}/scores.json")
    return {k: np.asarray(v) for k, v in json.loads(Path(path).read_text()).items()}


def analyse_run(run, uri: str) -> dict:
    rid, m = run.info.run_id, run.data.metrics
    out: dict = {"seed": run.data.params.get("seed", "?"), "curve": learning_curve(rid, uri)}
    epochs = load_trajectory(rid, "weights_epoch", uri=uri)
    first50 = load_trajectory(rid, "weights_epoch", steps=slice(0, 49 * EPOCH + 1), uri=uri)
    out["epochs_n"], out["first50_n"] = len(epochs.steps), len(first50.steps)
    for part in ("nb01", "all_epochs", "per_step", "sketch", "series"):
        out[part] = {}
    for orig, label, name, step, key in LAYERS:
        out["nb01"][orig] = np.cumsum(ratios(first50, label, 50))
        out["all_epochs"][orig] = np.cumsum(ratios(epochs, label, 50))
        per_step = [m.get(f"analysis/{step}/{key}/explained_{i}") for i in range(1, 11)]
        out["per_step"][orig] = np.cumsum([v for v in per_step if v is not None])
        table = scores(rid, uri, step)
        out["series"][orig] = (table["step"], [table[f"{key}/pc{i}"] for i in (1, 2, 3)])
        if name != "fc2":  # the CountSketch vs the full weights, on the same epoch steps
            sketched = load_trajectory(rid, name, steps=slice(0, None, EPOCH), uri=uri)
            assert np.array_equal(sketched.steps, epochs.steps)
            out["sketch"][orig] = np.cumsum(ratios(sketched, None, 50))
    fc2_every10 = load_trajectory(rid, "fc2", steps=slice(0, None, 10), uri=uri)
    out["fc2_every10"] = np.cumsum(ratios(fc2_every10, None, 10))
    out["classes"] = per_class_accuracy(rid, uri)
    out["edm"] = edm(out["series"])
    return out


EDM_EVERY = 5  # of the 10-step scores: EDM and S-map on every 50th step (S-map's cost)
THETAS = (0, 0.5, 1, 2, 4, 8)


def edm(series: dict) -> dict:
    """EDM and S-map of each layer's PC1 (every 50 steps) and of its increments; CCM between
    the layers (every 10 steps)."""
    pc1 = {orig: pcs[0] for orig, (_, pcs) in series.items()}
    out: dict = {"levels": {}, "increments": {}}
    for kind, data in (("levels", pc1), ("increments", {k: np.diff(v) for k, v in pc1.items()})):
        for orig, x in data.items():
            coarse = (
                x[::EDM_EVERY]
                if kind == "levels"
                else np.add.reduceat(x, range(0, len(x), EDM_EVERY))
            )
            e = EmbedDimension(max_E=10).fit(coarse).metrics
            s = SMapNonlinearity(E=int(e["best_E"]), thetas=THETAS).fit(coarse)
            out[kind][orig] = {**e, **s.metrics, "by_theta": s.tables["rho_by_theta"]}
        short = {k.split(".")[1]: v for k, v in data.items()}  # fc_layers.0.weight -> "0"
        ccm = CrossMapping(E=3, sample=20).fit({f"fc{k}": v for k, v in short.items()})
        out[kind]["ccm"] = ccm.metrics, ccm.tables["rho_by_library"]
    return out


def print_tables(runs: list[dict]) -> None:
    seeds = " / ".join(f"seed {r['seed']}" for r in runs)
    print(f"| quantity | original (source) | dynsweep ({seeds}) | difference |")
    print("|---|---|---|---|")
    for key, theirs in CURVE.items():
        ours = [r["curve"][key] for r in runs]
        print(
            f"| final {key} (epoch 100) | {theirs:.4f} (metrics.csv, epoch 99) | "
            f"{' / '.join(f'{v:.4f}' for v in ours)} | {' / '.join(rel(v, theirs) for v in ours)} |"
        )
    for orig, *_ in LAYERS:
        theirs = NB01[orig][0]
        ours = [r["nb01"][orig][0] for r in runs]
        print(
            f"| {orig} PC1 explained variance, 50 epoch snapshots | {theirs:.4f} (01_analysis_psd "
            f"cell 6) | {' / '.join(f'{v:.4f}' for v in ours)} | "
            f"{' / '.join(rel(v, theirs) for v in ours)} |"
        )
    for orig, *_ in LAYERS:
        ours = [pcs_for(r["nb01"][orig]) for r in runs]
        print(
            f"| {orig} PCs for 99 %, 50 epoch snapshots | {NB01_PCS99[orig]} (01_analysis_psd "
            f"cell 6, k ∈ {{1–5, 10, 20, 50}}) | {' / '.join(ours)} | |"
        )
    cum = np.cumsum(NB02_FC2)
    for orig, *_ in LAYERS:
        ours = [r["per_step"][orig] for r in runs]
        known = orig.endswith("2.weight")
        theirs, their_pcs = (f"{cum[0]:.4f}", pcs_for(cum)) if known else ("–", "–")
        src = "(fc_layers.2.weight.pkl)" if theirs != "–" else "(pickle not in the repository)"
        diff = " / ".join(rel(v[0], cum[0]) for v in ours) if theirs != "–" else ""
        print(
            f"| {orig} PC1 / PCs for 99 %, every step (IncrementalPCA, 10 PCs) | {theirs} / "
            f"{their_pcs} {src} | {' / '.join(f'{v[0]:.4f} / {pcs_for(v)}' for v in ours)} "
            f"| {diff} |"
        )
    ks = ", ".join(map(str, KS))
    print(f"\nCumulative explained variance at k = {ks} (50 snapshots):\n")
    print("| layer | original | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for orig, *_ in LAYERS:
        row = [" ".join(at(r["nb01"][orig], k) for k in KS) for r in runs]
        print(f"| {orig} | {' '.join(f'{v:.3f}' for v in NB01[orig])} | {' | '.join(row)} |")
    print("\nMeasurements behind the differences (PC1 explained variance / PCs for 99 %):\n")
    print("| measurement | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |")
    print("|---|" + "---|" * len(runs))

    def row(title, get):
        print(f"| {title} | " + " | ".join(get(r) for r in runs) + " |")

    for orig, *_ in LAYERS[:2]:
        row(f"{orig}: full weights, 101 epoch snapshots", lambda r, o=orig: fmt(r["all_epochs"][o]))
        row(f"{orig}: 4,096-value sketch, same snapshots", lambda r, o=orig: fmt(r["sketch"][o]))
    o2 = LAYERS[2][0]
    row(f"{o2}: every step (46,901 rows, IncrementalPCA)", lambda r: fmt(r["per_step"][o2]))
    row(f"{o2}: every 10th step (4,691 rows)", lambda r: fmt(r["fc2_every10"]))
    row(f"{o2}: 101 epoch snapshots", lambda r: fmt(r["all_epochs"][o2]))
    row(f"{o2}: first 50 epoch snapshots", lambda r: fmt(r["nb01"][o2]))
    row("val accuracy per class (0–9)", lambda r: " ".join(f"{a:.2f}" for a in r["classes"]))
    for kind in ("levels", "increments"):
        print(f"\nEDM of each layer's PC1 ({kind}, every 50 steps):\n")
        print("| seed | layer | best E | simplex ρ | S-map ρ (θ = 0) | best θ | ρ gain |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            for orig, *_ in LAYERS:
                e = r["edm"][kind][orig]
                print(
                    f"| {r['seed']} | {orig} | {e['best_E']:.0f} | {e['rho']:.3f} | "
                    f"{e['rho_linear']:.3f} | {e['best_theta']:g} | {e['nonlinearity']:.3f} |"
                )
        print(f"\nCCM between the layers' PC1 ({kind}, E = 3; a:b = b estimated from a):\n")
        print("| seed | pair | ρ (largest library) | gain over library size | converges |")
        print("|---|---|---|---|---|")
        for r in runs:
            metrics = r["edm"][kind]["ccm"][0]
            for pair in sorted(k[4:] for k in metrics if k.startswith("rho/")):
                print(
                    f"| {r['seed']} | {pair} | {metrics['rho/' + pair]:.3f} | "
                    f"{metrics['gain/' + pair]:+.3f} | {metrics['converges/' + pair]:.0f} |"
                )


def at(cumulative: np.ndarray, k: int) -> str:
    return f"{cumulative[k - 1]:.3f}" if k <= len(cumulative) else "–"


def fmt(cumulative: np.ndarray) -> str:
    return f"{cumulative[0]:.4f} / {pcs_for(cumulative)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--sweep", default=None, help="sweep run name or id (default: newest)")
    parser.add_argument("--figures", default="docs/figures", help="folder of the PNG figures")
    parser.add_argument("--cache", default=None, help="pickle of the computed results (reused)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_uri()
    found = find_runs(EXPERIMENT, sweep=args.sweep, status="FINISHED", uri=uri)
    if not found:
        raise SystemExit(f"no finished runs of {EXPERIMENT!r} in {uri}")
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        runs = pickle.loads(cache.read_bytes())
    else:
        runs = [analyse_run(run, uri) for run in found]
        if cache:
            cache.write_bytes(pickle.dumps(runs))
    print_tables(runs)
    from reproductions.weight_dynamics_figures import draw

    for path in draw(runs, LAYERS, NB01, KS, NB02_FC2, Path(args.figures)):
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
