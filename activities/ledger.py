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
    LANE_QUERY,
    LANE_REQUEST,
    LANE_SIGNAL,
    LEDGER_WORKFLOW,
    RECORD_DEPLOYMENT,
    RECORD_SIGNAL,
    RECORDS_QUERY,
    DeploymentRecord,
    LaneRequest,
    LaneView,
    LedgerState,
    ledger_id,
)


class LedgerActivities:
    """Activities that need a Temporal client to reach ledger workflows."""

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name=RECORD_DEPLOYMENT)
    async def record_deployment(self, record: DeploymentRecord) -> None:
        await self._signal(record.application, record.service, record.environment, RECORD_SIGNAL, record)

    @activity.defn(name=LANE_REQUEST)
    async def lane_request(self, request: LaneRequest) -> None:
        """A release asks for its turn in an environment, or leaves the queue."""
        await self._signal(request.application, request.service, request.environment, LANE_SIGNAL, request)

    async def _signal(self, application: str, service: str, environment: str, signal: str, arg: object) -> None:
        # Signal-with-start: creates the ledger on first use, signals it otherwise.
        await self._client.start_workflow(
            LEDGER_WORKFLOW,
            LedgerState(application=application, service=service, environment=environment),
            id=ledger_id(application, service, environment),
            task_queue=activity.info().task_queue,
            start_signal=signal,
            start_signal_args=[arg],
            static_summary=f"{service} in {environment}: deployments and lane",
        )


async def read_lane(client: Client, application: str, service: str, environment: str) -> LaneView:
    """Who holds the service's lane in ``environment``, who waits, the hold and what is live."""
    handle = client.get_workflow_handle(ledger_id(application, service, environment))
    try:
        return await handle.query(LANE_QUERY, result_type=LaneView)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return LaneView()
        raise


async def read_ledger(client: Client, application: str, service: str, environment: str) -> list[DeploymentRecord]:
    """Deployments of a service in an environment, oldest first ([] if none yet)."""
    handle = client.get_workflow_handle(ledger_id(application, service, environment))
    try:
        return await handle.query(RECORDS_QUERY, result_type=list[DeploymentRecord])
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
