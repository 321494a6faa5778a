"""Driver-side Tune callback that keeps MLflow run statuses true on every exit path.

A trial ends its own run when it can. It cannot when the scheduler stops it (ASHA, PBT: its
actor is torn down while it waits in ``tune.report``) or when its process dies; this callback
ends such runs: FINISHED (tagged ``dynsweep.stop_reason = scheduler``) or FAILED.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from ray import tune

import tracking
from orchestrator.driver import kill_point
from tracking import tags as tag


class RunStatusCallback(tune.Callback):
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _run_ids(self, trial) -> list[str]:
        """The trial's run (a packed trial: its members' runs, comma-separated)."""
        return list(filter(None, (trial.last_result or {}).get("mlflow_run_id", "").split(",")))

    def _end_if_running(
        self, trial, status: str, error: str | None = None, tags: dict[str, str] | None = None
    ) -> None:
        if (trial.last_result or {}).get("mlflow_run_closed"):
            return
        client = MlflowClient(self.uri)
        running = [r for r in self._run_ids(trial) if client.get_run(r).info.status == "RUNNING"]
        if running:  # (one transaction on a SQL store)
            tracking.end_runs(self.uri, {r: (status, error, tags or {}) for r in running})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from orchestrator.driver import INTERRUPTED

        if INTERRUPTED.is_set():  # Tune ends running trials when interrupted: they go on later
            return
        self._end_if_running(trial, "FINISHED", tags={tag.STOP_REASON: "scheduler"})
        kill_point("trial_complete")  # test-only (see orchestrator.driver.kill_point)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = f"trial process failed: {trial.error_file or 'no error file'}"
        self._end_if_running(trial, "FAILED", error=reason)
