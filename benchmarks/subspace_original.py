"""The original paths code's MCLMC speed on one cell (energy, lambda, K = 2), this machine.

    PYTHON_OF_ORIGINAL benchmarks/subspace_original.py --original DIR --data energy.data \\
        [--chains 10] [--steps 2000] [--warmup 20] [--path-epochs 200] [--work DIR]

Run with the original's environment (JAX, BlackJAX, numpyro; see the docstring of
``reproductions/paths_original/run_original.py`` for the pinned versions); it does not import
dynsweep. ``benchmarks/subspace.py`` calls it as a subprocess (``--original DIR
--original-python PATH``). Prints one JSON line::

    {"grad_evals_per_s": …, "grad_evals_per_s_per_chain": …, "draws_per_s": …,
     "draws_per_s_per_chain": …, "chains": …, "compile_s": …, "jax": …, "blackjax": …}

What runs: the original's ``jax_sub_path_optim.single_run`` trains a short path
(``--path-epochs``; the path's values do not change the cost of a step), then
``jax_sub_sampling_from_path.single_run`` with the sweep's sampling settings
(``configs/split_uci_samplingFromPath_config.yaml``: lambda, prior_scale 0.5, tube_scale 0.1,
epsilon 25, isokinetic McLachlan, ``--chains`` chains vmapped, one temperature, T = 1). Its
``warmup_fn`` runs as is (``--warmup`` × 50 tuning steps); its ``run_inference`` (the draws:
``vmap`` over chains of BlackJAX's ``run_inference_algorithm``) is called twice, with ``--steps``
and 2 × ``--steps`` MCLMC steps. Each call compiles the same program once, so the difference
of the two wall times is ``--steps`` steps of pure sampling: rate = steps / (t2 − t1);
``compile_s`` = t1 − steps / rate. Then the script is stopped (its post-processing is not timed).

Counting as the original does: a step of isokinetic McLachlan is 2 gradient evaluations, a draw
100 gradient evaluations (``num_forward_passes``: 50 steps). ``grad_evals_per_s`` and
``draws_per_s`` count all chains together (wall clock). ``grad_evals_per_cpu_s`` is the same
count per second of this process's CPU time (XLA runs one intra-op thread), which a busy
machine changes less than the wall-clock rate; ``load_avg_1min`` says how busy it was.

90 chains (9 temperatures × 10): the script closes its log density over one temperature
(``initialize_model(..., model_args=(x, y, temperature), dynamic_args=False)``), so one run
cannot hold 9 temperatures without changing its code. ``--chains 90`` measures the same
array shapes (90 chains at one temperature): the temperature is a scalar factor of the
likelihood, so the arithmetic per step is the same.
"""

from __future__ import annotations

import os
import sys

# Run as a file, this folder heads sys.path, and its logging.py would shadow the standard one.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(HERE)
HARNESS = HERE.parent / "reproductions" / "paths_original" / "run_original.py"


class _Measured(Exception):
    pass


def _harness():
    spec = importlib.util.spec_from_file_location("run_original", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="folder of doldd/Paths-and-Ambient-Spaces")
    ap.add_argument("--data", required=True, help="energy.data (whitespace-separated)")
    ap.add_argument("--chains", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2000, help="MCLMC steps of the shorter call")
    ap.add_argument("--warmup", type=int, default=20, help="num_warmup (× 50 tuning steps)")
    ap.add_argument("--path-epochs", type=int, default=200)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    if args.steps < 1 or args.chains < 1:
        ap.error("--steps and --chains must be >= 1")

    import tempfile

    work = args.work or tempfile.mkdtemp(prefix="subspace_original_")
    data = os.path.abspath(args.data)
    h = _harness()
    jax = h.start_jax()
    xla_flags = os.environ.get("XLA_FLAGS", "")  # the scripts overwrite it once started
    n = len(np.genfromtxt(data, delimiter=" "))
    split = h.dynsweep_split(data, np.arange(n))  # the order does not change the cost
    dataset = Path(data).stem
    path_mod, samp_mod = h.load_original(args.original, split, work)
    import blackjax

    path_id, path_config, samp_config = h.configs(
        dataset, 0, 2, "lambda", args.path_epochs, args.chains, 1.0, args.warmup, 1
    )
    t0 = time.time()
    h.train_path(path_mod, path_id, path_config)
    path_s = time.time() - t0

    rec: dict = {}
    real_warmup, real_inference = samp_mod.warmup_fn, samp_mod.run_inference

    def warmup_fn(*a, **k):
        out = real_warmup(*a, **k)
        rec["warmup_s"] = out[0]
        return out

    def run_inference(get_kernel, rng_key, last_state, parameters, num_draws, num_chains):
        times, cpu = [], []
        for steps in (args.steps, 2 * args.steps):
            c0 = time.process_time()
            wall, *_ = real_inference(
                get_kernel, rng_key, last_state, parameters, steps, num_chains
            )
            times.append(wall)
            cpu.append(time.process_time() - c0)
        rec["times"], rec["cpu"] = times, cpu
        raise _Measured

    samp_mod.warmup_fn, samp_mod.run_inference = warmup_fn, run_inference
    with contextlib.suppress(_Measured):
        samp_mod.single_run(h.Logger("bench"), samp_config)
    t1, t2 = rec["times"]
    c1, c2 = rec["cpu"]
    if t2 <= t1:  # a busy machine: the longer call got less of a core; the wall rate is void
        raise SystemExit(f"sampling calls took {t1:.1f} s, {t2:.1f} s: rerun on a quieter machine")
    steps_per_s = args.steps / (t2 - t1)  # per chain
    grad = 2 * steps_per_s
    line = {
        "grad_evals_per_s": grad * args.chains,
        "grad_evals_per_s_per_chain": grad,
        "draws_per_s": grad * args.chains / 100,
        "draws_per_s_per_chain": grad / 100,
        "chains": args.chains,
        "compile_s": t1 - args.steps / steps_per_s,
        "sampling_calls_s": [t1, t2],
        "grad_evals_per_cpu_s": 2 * args.steps * args.chains / (c2 - c1),
        "sampling_calls_cpu_s": [c1, c2],
        "steps": [args.steps, 2 * args.steps],
        "warmup_s": rec.get("warmup_s"),
        "warmup_steps": args.warmup * 50,
        "path_s": path_s,
        "jax": jax.__version__,
        "blackjax": blackjax.__version__,
        "xla_flags": xla_flags,
        "load_avg_1min": os.getloadavg()[0],
    }
    sys.stdout.flush()
    print(json.dumps(line))


if __name__ == "__main__":
    main()
