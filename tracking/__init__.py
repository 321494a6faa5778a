"""Tracking: the only code that writes to MLflow.

One sweep is one parent run; each Tune trial is one child run (tag ``mlflow.parentRunId``).
``store`` holds experiments, sweep runs, statuses and analysis results; ``trial_run`` the run
of one trial (:func:`~tracking.trial_run.find_or_create_runs`, the one way trial runs are
opened) with its background metric path (``sender``); ``tags`` every tag name.

The verbs, one meaning each (here, and in the orchestrator's trial contexts):

- ``end(status, error)`` / :func:`end_run` / :func:`~tracking.trial_run.end_runs`: end an
  MLflow run with a status (FINISHED, FAILED, KILLED); ``error`` becomes its
  ``dynsweep.error`` tag and note. A context's ``end`` ends its run(s) this way.
- ``close()``: stop a metric path — flush what is queued and stop the sender thread
  (:meth:`MetricSender.close`; :meth:`TrialRun.close` flushes a shared sender and stops its
  own). The run stays as it is, RUNNING or ended, for another process or a later ``end``.
- ``finish(result, checkpoint, export)``: only the trainer-facing
  :class:`trainers.base.Context` method — training is done: keep the final model, end the
  run(s) FINISHED, make the last report.
- ``reopen()``: a new attempt in an ended run (RUNNING again).
"""

from tracking.store import (
    MAX_METRICS,
    analysis_tag,
    artifact_location,
    check_reachable,
    child_runs,
    default_artifact_root,
    end_run,
    end_unfinished_children,
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
    retry_if_locked,
    set_tags,
    start_sweep_run,
    tracking_uri,
    with_sql_driver,
)
from tracking.trial_run import RunSpec, TrialRun, end_runs, find_or_create_runs

__all__ = [
    "MAX_METRICS",
    "RunSpec",
    "TrialRun",
    "analysis_tag",
    "artifact_location",
    "check_reachable",
    "child_runs",
    "default_artifact_root",
    "end_run",
    "end_runs",
    "end_unfinished_children",
    "ensure_experiment",
    "environment_tags",
    "find_or_create_runs",
    "flatten",
    "git_sha",
    "log_analysis",
    "log_analysis_error",
    "log_params",
    "log_summary",
    "log_sweep_analysis",
    "reopen_run",
    "resolve_uri",
    "retry_if_locked",
    "set_tags",
    "start_sweep_run",
    "tracking_uri",
    "with_sql_driver",
]
