"""The member runs of a packed trial, opened and ended together.

A pack of 128 grid points needs 128 MLflow runs. One by one, each costs a search, a create, a
params batch and, at the end, tag and status updates — several transactions a run, which on
sqlite (one writer at a time, two packs racing) cost more than the training. On a SQL store
the runs are created — with their tags and params — in one transaction, and ended in one more
(:class:`tracking.mlflow_sql.SqlStore`); other stores (servers), or a SQL store whose MLflow
internals are not as expected (logged), go one run at a time through ``MlflowClient``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from tracking import tags as tag
from tracking.mlflow_sql import NewRun, sql_store
from tracking.sender import MetricSender
from tracking.store import TRIAL_TAG
from tracking.trial_run import TrialRun

PACK_TAG = tag.PACK


@dataclass
class MemberSpec:
    trial_id: str  # the member's own id (TRIAL-NNN)
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]


def open_members(
    uri: str,
    experiment_id: str,
    parent_id: str,
    pack_id: str,
    members: list[MemberSpec],
    sender: MetricSender,
) -> list[TrialRun]:
    """Each member's run: found again (a retried pack) or created, all logging through
    ``sender``."""
    store = sql_store(uri)
    if store is None:  # one run at a time (each finds itself again on a retry)
        return [
            TrialRun.open(
                uri,
                experiment_id,
                parent_id,
                m.trial_id,
                m.run_name,
                m.params,
                {**m.tags, PACK_TAG: pack_id},
                sender=sender,
            )
            for m in members
        ]
    client = MlflowClient(uri)
    found = {
        r.data.tags[TRIAL_TAG]: r
        for r in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PACK_TAG}` = '{pack_id}' and "
            f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=50_000,
        )
    }
    missing = [m for m in members if m.trial_id not in found]
    created = store.create_runs(
        experiment_id,
        [NewRun(m.trial_id, m.run_name, _tags(m, parent_id, pack_id), m.params) for m in missing],
    )
    runs = []
    for m in members:
        if m.trial_id in created:
            run_id, artifact_uri = created[m.trial_id]
            runs.append(
                TrialRun(
                    uri, run_id, -1, m.params, artifact_uri, sender=sender, run_name=m.run_name
                )
            )
        else:  # a retry: the run exists (reopened, one more attempt)
            runs.append(TrialRun.continue_run(uri, found[m.trial_id], sender))
    return runs


def _tags(m: MemberSpec, parent_id: str, pack_id: str) -> dict[str, str]:
    """A new member run's tags (``TrialRun.open``'s, and the pack's)."""
    return {
        "mlflow.parentRunId": parent_id,
        TRIAL_TAG: m.trial_id,
        PACK_TAG: pack_id,
        tag.ATTEMPTS: "1",
        **m.tags,
    }
