"""The member runs of a packed trial, opened and ended together.

A pack of 128 grid points needs 128 MLflow runs. One by one, each costs a search, a create, a
params batch and, at the end, tag and status updates — several transactions a run, which on
sqlite (one writer at a time, two packs racing) cost more than the training. On a SQL store
the runs are created — with their tags and params — in one transaction through MLflow's own
ORM models, and ended in one more; other stores (servers) go one run at a time.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from tracking import tags as tag
from tracking.secrets import credential_values, redact_values
from tracking.sender import MetricSender
from tracking.store import ERROR_TAG, TRIAL_TAG, _retry, set_tags
from tracking.trial_run import TrialRun

PACK_TAG = tag.PACK


@dataclass
class MemberSpec:
    trial_id: str  # the member's own id (TRIAL-NNN)
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]


def _sql_store(uri: str):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _get_store

    store = _get_store(uri)
    return store if isinstance(store, SqlAlchemyStore) else None


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
    store = _sql_store(uri)
    if store is None:  # a server: one run at a time (each finds itself again on a retry)
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
    created = _create(store, experiment_id, parent_id, pack_id, missing) if missing else {}
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


def _create(store, experiment_id, parent_id, pack_id, members) -> dict[str, tuple[str, str]]:
    """Runs with their tags and params, in one transaction of MLflow's ORM."""

    def tags_of(m: MemberSpec) -> dict[str, str]:
        return {
            "mlflow.parentRunId": parent_id,
            "mlflow.runName": m.run_name,
            TRIAL_TAG: m.trial_id,
            PACK_TAG: pack_id,
            tag.ATTEMPTS: "1",
            **m.tags,
        }

    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path

    location = store.get_experiment(experiment_id).artifact_location
    now = int(time.time() * 1000)
    out, rows, secrets = {}, [], credential_values()
    for m in members:
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(location, run_id, "artifacts")
        run = SqlRun(
            name=m.run_name,
            artifact_uri=artifact_uri,
            run_uuid=run_id,
            experiment_id=experiment_id,
            source_type="UNKNOWN",
            source_name="",
            entry_point_name="",
            user_id="unknown",
            status="RUNNING",
            start_time=now,
            end_time=None,
            deleted_time=None,
            source_version="",
            lifecycle_stage="active",
        )
        tags = redact_values(tags_of(m), 5000, secrets)
        run.tags = [SqlTag(key=k, value=v) for k, v in tags.items()]
        params = redact_values(m.params, 6000, secrets)
        run.params = [SqlParam(key=k, value=v) for k, v in params.items()]
        rows.append(run)
        out[m.trial_id] = (run_id, artifact_uri)

    def write() -> None:
        with store.ManagedSessionMaker(read_only=False) as session:
            session.add_all(rows)

    _retry(write)
    return out


def end_members(uri: str, ends: dict[str, tuple[str, str | None, dict[str, str]]]) -> None:
    """End runs: ``{run_id: (status, error, tags)}``, in one transaction on a SQL store."""
    store = _sql_store(uri)
    if store is None:
        from tracking.store import end_run

        client = MlflowClient(uri)
        for run_id, (status, error, tags) in ends.items():
            if tags:
                set_tags(client, run_id, tags)
            end_run(uri, run_id, status, error)
        return
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    now, secrets = int(time.time() * 1000), credential_values()

    def write() -> None:
        with store.ManagedSessionMaker(read_only=False) as session:
            runs = session.query(SqlRun).filter(SqlRun.run_uuid.in_(list(ends))).all()
            for run in runs:
                status, error, tags = ends[run.run_uuid]
                run.status, run.end_time = status, now
                extra = {ERROR_TAG: error, "mlflow.note.content": error} if error else {}
                safe = redact_values({**tags, **extra}, 5000, secrets)
                for key, value in safe.items():
                    session.merge(SqlTag(key=key, value=value, run_uuid=run.run_uuid))

    _retry(write)
