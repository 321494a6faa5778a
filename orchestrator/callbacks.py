"""Driver-side Tune callback that keeps MLflow run statuses true on every exit path.

A trial ends its own run when it can. It cannot when the scheduler stops it (ASHA, PBT: its
actor is torn down while it waits in ``tune.report``) or when its process dies; this callback
ends such runs: FINISHED (tagged ``dynsweep.stop_reason = scheduler``) or FAILED.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator import tracking


class RunStatusCallback(tune.Callback):
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _run_id(self, trial) -> str | None:
        return (trial.last_result or {}).get("mlflow_run_id")

    def _end_if_running(
        self, trial, status: str, error: str | None = None, tags: dict[str, str] | None = None
    ) -> None:
        run_id = self._run_id(trial)
        if run_id is None or (trial.last_result or {}).get("mlflow_run_closed"):
            return
        client = MlflowClient(self.uri)
        if client.get_run(run_id).info.status != "RUNNING":
            return
        if tags:
            tracking.set_tags(client, run_id, tags)
        tracking.end_run(self.uri, run_id, status, error)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from orchestrator.sweep import INTERRUPTED

        if INTERRUPTED.is_set():  # Tune ends running trials when interrupted: they go on later
            return
        self._end_if_running(trial, "FINISHED", tags={"dynsweep.stop_reason": "scheduler"})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = f"trial process failed: {trial.error_file or 'no error file'}"
        self._end_if_running(trial, "FAILED", error=reason)
