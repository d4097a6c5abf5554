"""What is deployed where, recorded in Temporal itself.

Each service in each environment has a long-lived *ledger* workflow (see
``workflows/ledger.py``) holding its recent deployments. A release appends to it once per environment,
when that deployment ends, through the ``record_deployment`` local activity
(signal-with-start, so the first deployment creates the ledger). Anything that
needs to know what runs where -- status, the "previous environment stable"
rule, rollback -- reads it with a query. No second database.

The payloads and names live in :mod:`prodline.contracts`; this module holds
the activity that writes a record and the read that the stable rule and the
client use.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from prodline.contracts import (
    LEDGER_WORKFLOW,
    RECORD_DEPLOYMENT,
    RECORD_SIGNAL,
    RECORDS_QUERY,
    DeploymentRecord,
    LedgerState,
    ledger_id,
)


class LedgerActivities:
    """Activities that need a Temporal client to reach ledger workflows."""

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name=RECORD_DEPLOYMENT)
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
