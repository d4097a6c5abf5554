"""What is deployed where, recorded in Temporal itself.

Each service in each environment has a long-lived *ledger* workflow (see
``workflows/ledger.py``) holding its recent deployments. A release appends to it once per environment,
when that deployment ends, through the ``record_deployment`` local activity
(signal-with-start, so the first deployment creates the ledger). Anything that
needs to know what runs where -- status, the "previous environment stable"
rule, rollback -- reads it with a query. No second database.

This module holds the shared types and the activities; it does not import
workflow code, so it names the ledger workflow by its registered type name.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

LEDGER_WORKFLOW = "DeploymentLedger"
RECORD_SIGNAL = "record"
RECORDS_QUERY = "records"


class DeploymentState(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class DeploymentRecord(BaseModel):
    application: str
    service: str
    environment: str
    version: str
    release_id: str
    state: DeploymentState
    started_at: datetime
    finished_at: datetime
    reason: str = ""


class LedgerState(BaseModel):
    application: str
    service: str
    environment: str
    records: list[DeploymentRecord] = Field(default_factory=list)


def ledger_id(application: str, service: str, environment: str) -> str:
    return f"deployments:{application}.{service}:{environment}"


class LedgerActivities:
    """Activities that need a Temporal client to reach ledger workflows."""

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name="prodline.record_deployment")
    async def record_deployment(self, record: DeploymentRecord) -> None:
        # Signal-with-start: creates the ledger on first use, appends otherwise.
        await self._client.start_workflow(
            LEDGER_WORKFLOW,
            LedgerState(application=record.application, service=record.service, environment=record.environment),
            id=ledger_id(record.application, record.service, record.environment),
            task_queue=activity.info().task_queue,
            start_signal=RECORD_SIGNAL,
            start_signal_args=[record],
            static_summary=f"{record.service} in {record.environment}: deployments",
        )


async def read_ledger(client: Client, application: str, service: str, environment: str) -> list[DeploymentRecord]:
    """Deployments of a service in an environment, oldest first ([] if none yet)."""
    handle = client.get_workflow_handle(ledger_id(application, service, environment))
    try:
        return await handle.query(RECORDS_QUERY, result_type=list[DeploymentRecord])
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
