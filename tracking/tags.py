"""Every MLflow tag name dynsweep writes or reads, in one place.

Run tags (child runs of trials, parent runs of sweeps) carry dynsweep's own state: which Tune
trial a run belongs to, how far its metrics were logged, why it stopped. Readers (the
orchestrator, ``analysis.io``) import the names from here rather than spelling them, and no
module keeps an alias of its own (the tests spell them out, so a renamed tag fails them).
"""

from __future__ import annotations

# MLflow's own tags that dynsweep sets
PARENT = "mlflow.parentRunId"  # a trial's run is a child of its sweep's run
NOTE = "mlflow.note.content"  # the run's note in the UI (a failed run: why)

# A trial's child run
TRIAL = "dynsweep.trial_id"  # Tune's trial id (stable across retries and resume)
PACK = "dynsweep.pack"  # the packed Tune trial a member run belongs to
SEED = "dynsweep.seed"
ATTEMPTS = "dynsweep.attempts"  # 1 + retries/resumes of the trial in this run
LOGGED_STEP = "dynsweep.logged_step"  # metrics of steps <= this are stored
ERROR = "dynsweep.error"  # why the run FAILED
FATAL = "dynsweep.fatal"  # a failure retrying cannot fix: retries fail at once
STOP_REASON = "dynsweep.stop_reason"  # what ended training (a stop rule, the scheduler)
WARNING = "dynsweep.warning"  # e.g. damaged checkpoint files passed over on resume
CONFIG_AT_STEP = "dynsweep.config_at_step_"  # + step: a config changed mid-run (PBT)

# A sweep's parent run
ROLE = "dynsweep.role"  # "sweep"
SWEEP_DIR = "dynsweep.sweep_dir"
GIT_SHA = "dynsweep.git_sha"
CONFIG_HASH = "dynsweep.config_hash"
LAUNCHER = "dynsweep.launcher"

# An Optuna trial's user attributes (orchestrator.search)
SWEEP = "dynsweep.sweep"  # the parent run id of the sweep that asked the trial (and TRIAL)
ENDED = "dynsweep.ended"  # why dynsweep ended the Optuna trial itself

# Versions of what ran (every run)
VERSION = "dynsweep.version"
PYTHON = "dynsweep.python"
TORCH = "dynsweep.torch"
RAY = "dynsweep.ray"
MLFLOW = "dynsweep.mlflow"


def analysis(step: str) -> str:
    """The tag holding the config hash of analysis ``step`` on a run (re-runs skip it)."""
    return f"dynsweep.analysis.{step}"


def config_at_step(step: int) -> str:
    return f"{CONFIG_AT_STEP}{step}"
