"""The quickstart as a user runs it: ``dynsweep sweep CONFIG`` in its own process, with its own
local Ray, read back from the MLflow store it wrote (the quick tier's one end-to-end test).

It checks what the user sees as well as what is stored: the trial lines, the summary and the
analysis, and none of Ray's, Tune's or MLflow's chatter (their INFO lines, Tune's progress box,
its TensorBoard hint, Ray Train's "Checkpoint successfully created"), which ``--verbose`` brings
back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.helpers import steps_of, store, sweep_runs

STEPS = 30
CONFIG = {
    "name": "t",
    "trainer": "classifier",
    "config": {
        "dataset": "digits",
        "batch_size": 32,
        "model": {"widths": [8]},
        "optimizer": {"lr": {"grid": [0.05, 0.2]}},
    },
    "metric": "val/acc",
    "mode": "max",
    "stop": {"iterations": STEPS},
    # checkpoints every 10 steps: Ray Train would announce each of them
    "loop": {"report_every": 5, "eval_every": 10, "checkpoint_every": 10, "learning_curves": False},
    "resources": {"cpus": 1},
    "max_concurrent_trials": 2,
    "analysis": [{"step": "edm", "input": "train/loss", "params": {"max_E": 4}}],
}
NOISE = [
    "INFO mlflow",  # MLflow's INFO lines ("Creating initial MLflow database tables...")
    "Configuration for experiment",  # Tune's box
    "View detailed results here",
    "TensorBoard",
    "Checkpoint successfully created",  # Ray Train's INFO line, in each trial's process
]
# Log levels set in the environment would change what is printed.
UNSET = ("MLFLOW_LOGGING_LEVEL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


def dynsweep(folder: Path, *argv: str, timeout: float = 300) -> tuple[int, str, str]:
    """``python -m dynsweep ARGV`` in ``folder``: (exit status, stdout, stderr). Its process
    group (the local Ray it starts included) is killed if it runs past ``timeout``."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynsweep", *argv],
        cwd=folder, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        message = f"dynsweep {' '.join(argv)}: still running after {timeout} s\n{err[-4000:]}"
        raise AssertionError(message) from None
    return proc.returncode, out, err


def test_quickstart_prints_the_sweep_and_stores_every_step(tmp_path):
    cfg = tmp_path / "quick.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))

    code, out, err = dynsweep(tmp_path, "sweep", str(cfg))
    shown = f"--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 0, shown
    assert out.count(" FINISHED  val/acc = ") == 2, shown  # one line per trial (no terminal)
    assert "2 trials — 2 finished, 0 failed, 0 killed" in out, shown
    assert "Best trial: " in out, shown
    assert "Analysis (written to each run" in out, shown
    for noise in NOISE:
        assert noise not in out + err, f"{noise!r} printed\n{shown}"

    client = store(tmp_path)
    parents, children = sweep_runs(client)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    for child in children:
        steps = steps_of(client, child.info.run_id, "train/loss")
        np.testing.assert_array_equal(steps, np.arange(1, STEPS + 1))  # every step, once
        assert np.isfinite(child.data.metrics["analysis/edm/best_E"])
    # The checkpoints were made (so their announcement had something to announce).
    assert len(list(tmp_path.glob("dynsweep_runs/*/trial_*/checkpoint_*"))) >= 2

    # --verbose brings Ray's and MLflow's INFO lines back; here on `analyze` of the same config
    # (a second sweep would double the test's time): the results are kept, Ray starts locally.
    code, out, err = dynsweep(tmp_path, "analyze", str(cfg), "--verbose")
    shown = f"--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 0, shown
    assert out.count("(kept: same step config)") == 2, shown
    assert "INFO worker.py" in err and "Started a local Ray instance" in err, shown
