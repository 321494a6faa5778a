"""Tracking: the only code that writes to MLflow.

One sweep is one parent run; each Tune trial is one child run (tag ``mlflow.parentRunId``).
``store`` holds experiments, sweep runs, statuses and analysis results; ``trial_run`` the run
of one trial with its background metric path.
"""

from tracking.store import (
    ERROR_TAG,
    MAX_METRICS,
    STEP_TAG,
    TRIAL_TAG,
    analysis_tag,
    artifact_location,
    check_reachable,
    child_runs,
    close_unfinished_children,
    default_artifact_root,
    end_run,
    ensure_experiment,
    environment_tags,
    flatten,
    git_sha,
    log_analysis,
    log_analysis_error,
    log_params,
    log_summary,
    log_sweep_analysis,
    reopen_run,
    resolve_uri,
    set_tags,
    start_sweep_run,
    tracking_uri,
    with_sql_driver,
)
from tracking.trial_run import TrialRun

__all__ = [
    "ERROR_TAG",
    "MAX_METRICS",
    "STEP_TAG",
    "TRIAL_TAG",
    "TrialRun",
    "check_reachable",
    "child_runs",
    "close_unfinished_children",
    "default_artifact_root",
    "end_run",
    "ensure_experiment",
    "environment_tags",
    "flatten",
    "git_sha",
    "analysis_tag",
    "artifact_location",
    "log_analysis",
    "log_analysis_error",
    "log_sweep_analysis",
    "log_params",
    "log_summary",
    "reopen_run",
    "resolve_uri",
    "tracking_uri",
    "with_sql_driver",
    "set_tags",
    "start_sweep_run",
]
