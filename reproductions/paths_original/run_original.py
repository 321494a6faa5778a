"""Run the original paths code (Dold et al.) on one UCI cell, on dynsweep's data split.

    PYTHON_OF_ORIGINAL reproductions/paths_original/run_original.py --original DIR \\
        --data energy.data --split split_seed0.npy --seed 0 --temperature 1.0 --out OUT.json \\
        [--k 2] [--space lambda] [--path-epochs 100000] [--warmup 1000] [--draws 1000] \\
        [--chains 10] [--work WORKDIR] [--npz OUT.npz] [--stage all|path|sample]

``--stage path`` trains and saves the path only; ``--stage sample`` samples from the path saved
in ``--work`` (one path, several temperatures).

What it runs: the original's two scripts' own ``single_run`` functions, unchanged,
``jax_sub_path_optim.single_run(logger, config)`` (the Bezier path, as
``configs/split_uci_path_config.yaml`` trains it) and then
``jax_sub_sampling_from_path.single_run(logger, config)`` (MCLMC from that path, as
``configs/split_uci_samplingFromPath_config.yaml``). Only their surroundings are replaced:

- ``logger`` is a stub (``log``, ``summary.update``, ``id``, ``log_artifact``, ``use_artifact``,
  ``finish``); ``wandb.Api``, ``wandb.Artifact``, ``wandb.Image``, ``wandb.Table`` are
  monkeypatched so that the sampling script finds the path run's params and data in the local
  ``tmp_files/`` the path script writes (no network, no wandb account);
- the path script's module-level ``load_uci`` is replaced by dynsweep's split: every column
  (target too) standardised by the whole file's mean and population std (float64, then float32),
  the rows permuted by ``--split`` (an ``.npy`` of row indices: dynsweep's ``torch.randperm``
  order, written by ``make_split.py`` with the project's Python, as this environment has no
  torch), the first ``int(0.7 n)`` rows train, up to ``int(0.8 n)`` validation, the rest test;
- the config key ``curve_params.bias_ascending_dnn``, which the sampling script reads but the
  sweep configs do not set, is ``False`` (the path script's default for it).

It also records, by wrapping the sampling module's ``initialize_model``, ``warmup_fn`` and
``run_inference`` (each calls the original unchanged): the chains' starting t and sigma
(``post_proc_fun`` of the initial positions, which the script hands to BlackJAX in numpyro's
unconstrained coordinates), the tuned L and step size, and each stage's wall time.

Output: ``--out`` (JSON: the sampling script's summary, ``elpd_test`` = test LPPD per point,
``rmse_test``, ``elpd_valid``, ``rmse_valid``, ``r_hat_max``, ``ess_min`` …, the path's learnt
sigma, best validation loss and epoch, the starts, timings, versions) and ``--npz`` (the path's
control points in weight space, its log sigma, and the data split).

Getting the original: ``git clone https://github.com/doldd/Paths-and-Ambient-Spaces``
(``--original`` is that folder; only ``src/``, ``proba_sandbox/module_sandbox/`` and the two
``jax_sub_*.py`` scripts are used). Its environment (Python 3.11, CPU, the versions its
``poetry.lock`` pins; ``h5py`` for the sampling script's final ``to_netcdf``)::

    python3.11 -m venv venv && venv/bin/pip install jax==0.4.30 jaxlib==0.4.30 \\
        blackjax==1.2.3 numpyro==0.15.3 flax==0.8.5 optax==0.2.3 arviz==0.18.0 \\
        numpy==1.26.4 wandb==0.17.9 jax-tqdm==0.2.2 matplotlib scipy tqdm h5py

This file must not import dynsweep (it runs in that venv). Threads: it sets XLA to one
intra-op thread unless ``XLA_FLAGS`` is already set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def dynsweep_split(data_file: str, order: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, y, x_val, y_val, x_test, y_test as dynsweep's ``uci`` loader cuts them (float32):
    every column standardised by the file's mean and population std, rows in ``order``."""
    data = np.genfromtxt(data_file, delimiter=" ")
    if order.shape != (len(data),) or not np.array_equal(np.sort(order), np.arange(len(data))):
        raise SystemExit(f"--split: not a permutation of the {len(data)} rows of {data_file}")
    data = ((data - data.mean(0)) / data.std(0)).astype(np.float32)[order]
    a, b = int(len(data) * 0.7), int(len(data) * (0.7 + 0.1))
    parts = data[:a], data[a:b], data[b:]
    return tuple(arr for p in parts for arr in (p[:, :-1], p[:, -1]))


class _Summary(dict):
    pass


class Logger:
    """What the scripts call on a wandb run; keeps scalars."""

    def __init__(self, run_id: str):
        self.id = run_id
        self.summary = _Summary()
        self.scalars: dict = {}

    def log(self, d: dict) -> None:
        for key, val in d.items():
            numeric = isinstance(val, (int, float, np.number)) or hasattr(val, "dtype")
            if numeric and np.ndim(val) == 0:
                self.scalars[key] = float(val)

    def log_artifact(self, artifact) -> None:
        pass

    def use_artifact(self, name):
        return _Artifact(name)

    def finish(self) -> None:
        pass


class _Entry:
    def __init__(self, name: str):
        self.name = name

    def download(self, root: str = "") -> str:
        return os.path.join("tmp_files", self.name)


class _Artifact:
    def __init__(self, name: str, type: str = ""):
        self.name, self.type = name, type

    def add_file(self, path: str) -> None:
        pass

    def get_entry(self, name: str) -> _Entry:
        return _Entry(name)


class _Run:
    """The finished path run, as ``wandb.Api().run`` would return it."""

    state = "finished"

    def __init__(self, run_id: str, config: dict):
        self.id, self.name, self.config = run_id, run_id, config

    def logged_artifacts(self):
        return [_Artifact("params", "pytree"), _Artifact("dataset", "numpy")]


class _Api:
    path_run: _Run | None = None

    def sweep(self, sweep_id):
        raise LookupError("no sweeps offline")  # the script then asks for one run

    def run(self, run_id):
        return _Api.path_run


def to_py(val):
    if isinstance(val, dict):
        return {k: to_py(v) for k, v in val.items()}
    if isinstance(val, (list, tuple)):
        return [to_py(v) for v in val]
    if hasattr(val, "__array__"):  # NumPy and JAX arrays, their scalars
        return np.asarray(val).tolist()
    return val


def start_jax():
    """Import JAX with one intra-op thread (unless ``XLA_FLAGS`` is set) and start its backend
    now: the scripts overwrite ``XLA_FLAGS`` when imported, which then no longer matters."""
    os.environ.setdefault("XLA_FLAGS", _FLAGS)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import jax

    jax.devices()
    return jax


def load_original(original: str, split: tuple[np.ndarray, ...], work: str):
    """Import the two scripts from ``original`` with wandb stubbed and ``load_uci`` returning
    ``split``; the working directory becomes ``work`` (the scripts write ``tmp_files/``)."""
    os.makedirs(os.path.join(work, "tmp_files"), exist_ok=True)
    os.chdir(work)
    sys.path.insert(0, os.path.abspath(original))
    import jax.numpy as jnp
    import jax_sub_path_optim as path_mod
    import jax_sub_sampling_from_path as samp_mod
    import matplotlib.pyplot as plt
    import wandb

    def image(fig, *a, **k):
        plt.close(fig)

    for mod in (wandb, path_mod.wandb, samp_mod.wandb):
        mod.Api, mod.Artifact, mod.Image = _Api, _Artifact, image
        mod.Table = lambda *a, **k: None
    path_mod.load_uci = lambda name, seed: tuple(jnp.asarray(a) for a in split)
    return path_mod, samp_mod


SPACES = {
    "lambda": {
        "space": "lambda",
        "prior_scale": 0.5,
        "tube_scale": 0.1,
        "epsilon": 25.0,
        "prior_correct": False,
    },
    "line": {"space": "line", "epsilon": 25.0},
    "varphi": {"space": "varphi", "prior_scale": 0.5},
}


def configs(dataset, seed, k, space, epochs, chains, temperature, warmup, draws):
    """The path and sampling configs of one cell, as the original's sweep files set them
    (``bias_ascending_dnn``: False, the path script's default, which the sweeps leave unset)."""
    curve_params = {
        "k": k,
        "model_kwargs": {"depth": 3, "width": 16, "activation": "relu"},
        "n_samples": 10,
        "lr": 0.005,
        "num_epochs": epochs,
        "use_validation": True,
        "out_scale": 0.05,
        "optimize_distparams": True,
        "uniform_t_optimize": True,
        "bias_ascending_dnn": False,
    }
    path_config = {"curve_params": curve_params, "rng_seed": seed, "dataset": dataset}
    sampling = {
        "space_config": SPACES[space],
        "num_chains": chains,
        "temperature": temperature,
        "num_warmup": warmup,
        "num_draws": draws,
        "sampler": "mclmc",
        "num_forward_passes": 100,
    }
    samp_config = {**path_config, "sampling": sampling, "path_sweep_id": "local/path-run"}
    path_id = f"path_{dataset}_k{k}_s{seed}"
    _Api.path_run = _Run(path_id, path_config)
    return path_id, path_config, samp_config


def train_path(path_mod, path_id: str, path_config: dict) -> dict:
    """The path script's ``single_run``; its best params stay in ``tmp_files/``."""
    t0 = time.time()
    logger = Logger(path_id)
    path_mod.single_run(logger, path_config)
    params = np.load(f"tmp_files/{path_id}_params.npy", allow_pickle=True).item()
    log_sigma = float(params["dist_params"]["log_scale"])
    return {
        "best_valid_loss": float(logger.summary["best_loss"]),
        "best_epoch": int(logger.summary["at_epoch"]),
        "sigma": float(np.exp(log_sigma)),
        "log_sigma": log_sigma,
        "curve_log_likelihood_train": logger.scalars.get("curve_log_likelihood"),
        "epochs": path_config["curve_params"]["num_epochs"],
        "wall_s": time.time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="folder of doldd/Paths-and-Ambient-Spaces")
    ap.add_argument("--data", required=True, help="the UCI .data file (e.g. energy.data)")
    ap.add_argument("--split", required=True, help=".npy of row indices (make_split.py)")
    ap.add_argument("--seed", type=int, default=0, help="the scripts' rng_seed")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", required=True, help="JSON of the results")
    ap.add_argument("--npz", help="control points and split (.npz)")
    ap.add_argument("--k", type=int, default=2, help="curve_params.k (k+1 control points)")
    ap.add_argument("--space", default="lambda", choices=sorted(SPACES))
    ap.add_argument("--path-epochs", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=10)
    ap.add_argument("--work", default="orig_work", help="working folder (tmp_files/ goes here)")
    ap.add_argument(
        "--stage",
        default="all",
        choices=["all", "path", "sample"],
        help="path: train and save the path only; sample: reuse the path saved in --work",
    )
    args = ap.parse_args()
    out, npz = os.path.abspath(args.out), args.npz and os.path.abspath(args.npz)

    jax = start_jax()
    order = np.load(args.split)
    split = dynsweep_split(args.data, order)
    dataset = os.path.splitext(os.path.basename(args.data))[0]
    path_mod, samp_mod = load_original(args.original, split, args.work)
    import blackjax
    from src.jax_subspace_curve import pytree_to_matrix

    rec: dict = {"starts": {}, "timing": {}}
    real_init, real_warmup, real_inference = (
        samp_mod.initialize_model,
        samp_mod.warmup_fn,
        samp_mod.run_inference,
    )

    def initialize_model(*a, **k):
        out = real_init(*a, **k)
        rec["post_proc_fun"] = out[2]
        return out

    def warmup_fn(rng_key, initial_position, init_fn, num_warmup, num_chains):
        start = jax.vmap(rec["post_proc_fun"])(initial_position)
        rec["starts"] = {
            "unconstrained": to_py({k: np.asarray(v) for k, v in initial_position.items()}),
            "constrained": to_py({k: np.asarray(start[k]) for k in initial_position}),
        }
        out = real_warmup(rng_key, initial_position, init_fn, num_warmup, num_chains)
        rec["timing"]["warmup_s"] = out[0]
        tuned = out[3]
        rec["tuned"] = {"L": to_py(tuned.L), "step_size": to_py(tuned.step_size)}
        return out

    def run_inference(*a, **k):
        out = real_inference(*a, **k)
        rec["timing"]["sampling_s"] = out[0]
        return out

    samp_mod.initialize_model = initialize_model
    samp_mod.warmup_fn, samp_mod.run_inference = warmup_fn, run_inference

    path_id, path_config, samp_config = configs(
        dataset, args.seed, args.k, args.space, args.path_epochs,
        args.chains, args.temperature, args.warmup, args.draws,
    )  # fmt: skip
    path_json = os.path.join("tmp_files", f"{path_id}_result.json")
    if args.stage in ("all", "path"):
        path_rec = train_path(path_mod, path_id, path_config)
        with open(path_json, "w") as f:
            json.dump(path_rec, f)
    else:
        with open(path_json) as f:
            path_rec = json.load(f)
    rec["timing"]["path_s"] = path_rec["wall_s"]
    params = np.load(f"tmp_files/{path_id}_params.npy", allow_pickle=True).item()
    if npz:
        names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        cp = np.asarray(pytree_to_matrix(params["params"], args.k))
        np.savez_compressed(
            npz, control_points=cp, log_sigma=path_rec["log_sigma"], order=order,
            **dict(zip(names, split)),
        )  # fmt: skip
    samp_summary: dict = {}
    if args.stage in ("all", "sample"):
        t1 = time.time()
        samp_logger = Logger(f"sampling_{path_id}_T{args.temperature}")
        samp_mod.single_run(samp_logger, samp_config)
        rec["timing"]["sampling_total_s"] = time.time() - t1
        samp_summary = to_py(dict(samp_logger.summary))

    result = {
        "config": samp_config,
        "split": {
            "file": os.path.basename(args.split),
            "sizes": [len(split[i]) for i in (1, 3, 5)],
        },
        "path": path_rec,
        "sampling": samp_summary,
        "starts": rec["starts"],
        "tuned": rec.get("tuned"),
        "timing_s": rec["timing"],
        "versions": {"jax": jax.__version__, "blackjax": blackjax.__version__},
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=lambda o: np.asarray(o).tolist())
    print(json.dumps({k: result[k] for k in ("path", "sampling", "timing_s")}, indent=1))


if __name__ == "__main__":
    main()
