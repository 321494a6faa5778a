"""Dataset dynamics on Fashion-MNIST, reproduced: finished MLflow runs -> the study page's tables
and figures.

Reads the newest sweep of ``configs/fashion_mnist_dataset_dynamics_repro.yaml`` (experiment
``fashion_mnist_dataset_dynamics_repro``) and prints, as markdown:

(a) the coefficients of the dataset's own PDE (the ``dataset_pde`` analysis step) beside the
    original's (``notebooks/pysindy/PDE_heriarchy_FMNIST/Latex/eqns.tex``, column "None", the
    unsmoothed field of ``pysindy_fmnist_pde_og.ipynb``);
(b) the transition frame per bottleneck beside the original's (``notebooks/misc/
    model_plots.ipynb``, cell 2, ``fmnist_data_3``) and b + 1, with the epoch after which each
    frame stopped moving;

and writes ``docs/figures/ae_fmnist_transition_frame.png`` (frame against bottleneck; frames
over training) and ``docs/figures/ae_fmnist_spectral_error.png`` (the per-eigenimage |FFT2|
error at the end of training, the original's "MSE per eigenimage" plot; the dataset's field
u(j, r)).

    python -m reproductions.dataset_dynamics [--tracking-uri URI] [--figures DIR]
        [--budget-experiment fashion_mnist_dataset_dynamics_budget]

(c) with ``--budget-experiment``: the frames every 20 epochs of a longer run of one bottleneck
    (the same config with ``--set name=… --set stop.iterations=…``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

EXPERIMENT = "fashion_mnist_dataset_dynamics_repro"
STEPS_PER_EPOCH = 469  # 60,000 images, batch 128

# notebooks/misc/model_plots.ipynb, cell 2: fmnist_data_3 (layers [784, b, 784]), the transition
# frame read off each trained model (500 epochs) and its loss.
ORIGINAL_FRAMES = {1: 2, 4: 4, 9: 10, 16: 17, 25: 26, 36: 36, 49: 48, 64: 65, 81: 81, 100: 101}
ORIGINAL_LOSS = {
    1: 0.0870203407386602, 4: 0.03674670542448254, 9: 0.025518305883821795,
    16: 0.02103960899225736, 25: 0.01736452020073341, 36: 0.014543906185712855,
    49: 0.012144576584509873, 64: 0.010411130611674261, 81: 0.008940654001751189,
    100: 0.007713364500362994,
}  # fmt: skip

# notebooks/pysindy/PDE_heriarchy_FMNIST/Latex/eqns.tex, column "None" (no smoothing).
ORIGINAL_PDE = {
    2: {"uu_x": -7.57265, "u^2u_x": 9.20864},
    3: {"uu_x": -8.13788, "u^2u_x": 13.32844, "u^2u_xx": 0.29776},
    4: {"uu_x": -11.35137, "u^2u_x": 18.23336, "uu_xx": -0.21804, "u^2u_xx": 0.65337},
    5: {
        "uu_x": -11.73880, "u^2u_x": 21.16582, "uu_xx": -0.24670, "u^2u_xx": 1.06030,
        "u^2u_xxx": 0.01459,
    },
    6: {
        "uu_x": -14.26977, "u^2u_x": 29.74040, "uu_xx": -0.63261, "u^2u_xx": 2.37197,
        "uu_xxx": -0.01559, "u^2u_xxx": 0.06715,
    },
}  # fmt: skip


def _runs(uri: str, experiment: str = EXPERIMENT):
    from analysis.io import find_runs

    runs = find_runs(experiment, status="FINISHED", uri=uri)
    if not runs:
        raise SystemExit(f"no finished run of {experiment!r} in {uri}")
    return sorted(runs, key=lambda r: int(float(r.data.params["config.model.bottleneck"])))


def pde_coefficients(run) -> dict[int, dict[str, float]]:
    """{number of terms: {term: coefficient}} from a run's ``dataset_pde`` metrics."""
    out: dict[int, dict[str, float]] = {}
    prefix = "analysis/pde/coef/"
    for key, value in run.data.metrics.items():
        if key.startswith(prefix):
            n, term = key[len(prefix) :].split("/", 1)
            name = term.replace("u2", "u^2")
            out.setdefault(int(n.split("_")[0]), {})[name] = value
    return out


def pde_table(ours: dict[int, dict[str, float]]) -> list[str]:
    lines = [
        "| terms | term | original (eqns.tex, None) | dynsweep | difference |",
        "|---|---|---|---|---|",
    ]
    for n in sorted(set(ORIGINAL_PDE) | set(ours)):
        theirs, mine = ORIGINAL_PDE.get(n, {}), ours.get(n)
        for term in sorted(set(theirs) | set(mine or {}), key=_term_order):
            a, b = theirs.get(term), (mine or {}).get(term)
            diff = f"{100 * (b - a) / abs(a):+.0f} %" if a is not None and b is not None else "—"
            lines.append(
                f"| {n} | {term} | {_num(a, n in ORIGINAL_PDE, '—')} | {_num(b, mine is not None)} "
                f"| {diff} |"
            )
    return lines


def _term_order(term: str) -> tuple[int, int, str]:
    """1, u, u^2, u_x, uu_x, u^2u_x, u_xx, …: by derivative, then the power of u before it."""
    head, _, derivative = term.partition("_")
    factor = head[:-1] if derivative else head  # u^2u_x: u^2 times the derivative of u
    power = {"": 0, "1": 0, "u": 1, "u^2": 2}.get(factor, 3)
    return len(derivative), power, term


def _num(value, found: bool, missing: str = "not found") -> str:
    """A coefficient; 0 for a term the model left out; ``missing`` where there is no model
    with that many terms."""
    if value is not None:
        return f"{value:.5f}"
    return "0" if found else missing


def frame_rows(uri: str, experiment: str = EXPERIMENT) -> list[dict]:
    """Per run: bottleneck, final frames, loss, and when the frames last moved."""
    from analysis.io import metric_history

    rows = []
    for run in _runs(uri, experiment):
        b = int(float(run.data.params["config.model.bottleneck"]))
        row = {"b": b, "run": run.info.run_id}
        for key in ("val/transition_frame", "val/rank", "val/loss"):
            steps, values = metric_history(run.info.run_id, key, uri)
            row[key] = (steps, values)
        rows.append(row)
    return rows


def _settled(steps: np.ndarray, values: np.ndarray) -> float:
    """The epoch after which ``values`` no longer changed (0: never changed)."""
    moved = np.nonzero(np.diff(values))[0]
    return steps[moved[-1] + 1] / STEPS_PER_EPOCH if len(moved) else 0.0


def frame_table(rows: list[dict]) -> list[str]:
    lines = [
        "| b | original frame (model_plots.ipynb, cell 2) | b + 1 | dynsweep rank frame "
        "(`val/rank`) | rank settled at epoch | dynsweep fft-error frame "
        "(`val/transition_frame`) | fft frame settled at epoch | original loss | dynsweep "
        "`val/loss` |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        b = row["b"]
        rank_s, rank = row["val/rank"]
        tf_s, tf = row["val/transition_frame"]
        loss = row["val/loss"][1][-1]
        orig = ORIGINAL_FRAMES.get(b)
        lines.append(
            f"| {b} | {orig if orig is not None else '—'} | {b + 1} | {rank[-1]:.0f} | "
            f"{_settled(rank_s, rank):.0f} | {tf[-1]:.0f} | {_settled(tf_s, tf):.0f} | "
            f"{ORIGINAL_LOSS.get(b, float('nan')):.4f} | {loss:.4f} |"
        )
    return lines


def budget_table(rows: list[dict], every: int = 20) -> list[str]:
    """The frames and the loss every ``every`` epochs of a longer run (the budget check)."""
    lines = [
        "| b | epoch | rank frame | fft-error frame | `val/loss` |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        steps = row["val/rank"][0]
        epochs = steps / STEPS_PER_EPOCH
        for target in range(every, int(epochs.max()) + 1, every):
            i = int(np.argmin(np.abs(epochs - target)))
            lines.append(
                f"| {row['b']} | {epochs[i]:.0f} | {row['val/rank'][1][i]:.0f} | "
                f"{row['val/transition_frame'][1][i]:.0f} | {row['val/loss'][1][i]:.4f} |"
            )
    return lines


def figure_frames(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bs = np.array(sorted(ORIGINAL_FRAMES))
    left.plot(bs, bs + 1, "k:", label="b + 1")
    left.plot(bs, [ORIGINAL_FRAMES[b] for b in bs], "o-", label="original (500 epochs)")
    ours = [r["b"] for r in rows]
    left.plot(ours, [r["val/rank"][1][-1] for r in rows], "s-", label="dynsweep: rank frame")
    left.plot(
        ours,
        [r["val/transition_frame"][1][-1] for r in rows],
        "^-",
        label="dynsweep: fft-error frame (0.5)",
    )
    left.set(xlabel="bottleneck b", ylabel="transition frame (eigen-index)")
    left.set_title("3-layer AE [784, b, 784], Fashion-MNIST", fontsize=10)
    left.legend(fontsize=8)
    for r in rows:
        steps, tf = r["val/transition_frame"]
        (line,) = right.plot(steps / STEPS_PER_EPOCH, tf, label=f"b = {r['b']}")
        right.plot(steps / STEPS_PER_EPOCH, r["val/rank"][1], ":", color=line.get_color())
    right.set(xlabel="epoch", ylabel="frame", title="over training (dotted: rank frame)")
    right.title.set_fontsize(10)
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def figure_errors(rows: list[dict], uri: str, field: dict | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.io import load_trajectory

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        trajectory = load_trajectory(r["run"], "spectral_error", uri=uri)
        error = trajectory.values.reshape(len(trajectory.steps), -1)[-1]
        (line,) = left.plot(np.arange(len(error)), error, lw=0.8, label=f"b = {r['b']}")
        left.axvline(r["b"] + 1, color=line.get_color(), ls=":", lw=0.8)
    left.axhline(0.5, color="k", lw=0.6)
    left.set(xlabel="eigenimage j", ylabel="Σ (|F_AE| − |F_data|)² (= MSE × 784)")
    left.set_title("per-eigenimage |FFT2| error after training (dotted: b + 1)", fontsize=10)
    left.legend(fontsize=7, ncol=2)
    if field:
        j, r, u = (np.asarray(field[k]) for k in ("j", "r", "u"))
        nj, nr = int(j.max()) + 1, len(np.unique(r))
        grid = u.reshape(nj, nr)[:200]
        image = right.imshow(
            grid,
            aspect="auto",
            origin="lower",
            extent=(r.min() - 0.5, r.max() + 0.5, 0, 200),
            norm=matplotlib.colors.LogNorm(),
        )
        right.axhline(15, color="w", lw=0.6)
        right.axhline(150, color="w", lw=0.6)
        fig.colorbar(image, ax=right)
        right.set(xlabel="ring radius r", ylabel="eigen-index j (PDE time)")
        right.set_title("the dataset's field u(j, r), log scale (PDE fit: j = 15…149)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _field(run, uri: str) -> dict | None:
    from mlflow.tracking import MlflowClient

    from analysis.io import local_artifact

    try:
        path = local_artifact(MlflowClient(uri), run.info.run_id, "analysis/pde/field.json")
    except Exception:
        return None
    return json.loads(Path(path).read_text())


def pde_sensitivity(data_dir: str, parts: int = 2) -> list[str]:
    """How much the dataset PDE's coefficients move with the images the field is made of: the
    config's fit (p = 1, half-width 1) on all training images and on ``parts`` disjoint parts
    of them. Markdown: per number of terms and term, the original's coefficient and each
    fit's."""
    import torch

    from analysis.dataset_pde import DatasetPDE
    from trainers.autoencoder import spectra
    from trainers.data import load_dataset

    (x, _), _ = load_dataset("fashion_mnist", Path(data_dir), 0.2, 0)
    subsets = {"all": x, **{f"part {i + 1}/{parts}": c for i, c in enumerate(x.chunk(parts))}}
    step = DatasetPDE(dataset="fashion_mnist", p=1.0, half_width=1.0)
    config = spectra.SpectraConfig(eigenimages=x[0].numel(), p=1.0, half_width=1.0)
    masks = spectra.ring_masks(tuple(x.shape[-2:]), config)
    radii = spectra.ring_radii(tuple(x.shape[-2:]), config).numpy()
    fits = {}
    for name, images in subsets.items():
        ffts = spectra.centred_fft(spectra.eigenimages(images.double(), images[0].numel()))
        u = spectra.ring_integrals(ffts.to(torch.float64), masks).numpy()
        fits[name] = {n: coefs for n, (_, _, coefs) in step.fit_field(u, radii).items()}
    head = " | ".join(f"{name} ({len(subsets[name]):,} images)" for name in fits)
    lines = [f"| terms | term | original | {head} |", "|---" * (3 + len(fits)) + "|"]
    for n in sorted(set().union(*fits.values(), ORIGINAL_PDE)):
        terms = set(ORIGINAL_PDE.get(n, {})).union(*(f.get(n, {}) for f in fits.values()))
        for term in sorted(terms, key=_term_order):
            cells = [_num(ORIGINAL_PDE.get(n, {}).get(term), n in ORIGINAL_PDE, "—")]
            cells += [_num(f.get(n, {}).get(term), n in f) for f in fits.values()]
            lines.append(f"| {n} | {term} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--figures", default="docs/figures", type=Path)
    parser.add_argument(
        "--budget-experiment",
        help="also print the frames over a longer run of this experiment (the budget check)",
    )
    parser.add_argument(
        "--pde-sensitivity",
        metavar="DATA_DIR",
        help="instead: the PDE fitted on all training images and on two disjoint halves",
    )
    args = parser.parse_args(argv)
    if args.pde_sensitivity:
        print("\n".join(pde_sensitivity(args.pde_sensitivity)))
        return
    uri = args.tracking_uri
    runs = _runs(uri)
    print("(a) The dataset's own PDE, u_t = … (t: eigen-index j, x: ring radius r)\n")
    print("\n".join(pde_table(pde_coefficients(runs[0]))))
    rows = frame_rows(uri)
    print("\n(b) Transition frame against bottleneck\n")
    print("\n".join(frame_table(rows)))
    print()
    print(figure_frames(rows, args.figures / "ae_fmnist_transition_frame.png"))
    field = _field(runs[0], uri)
    print(figure_errors(rows, uri, field, args.figures / "ae_fmnist_spectral_error.png"))
    if args.budget_experiment:
        print("\n(c) The frames over a longer training (budget check)\n")
        print("\n".join(budget_table(frame_rows(uri, args.budget_experiment))))


if __name__ == "__main__":
    main()
