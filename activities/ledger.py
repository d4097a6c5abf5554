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

import json

from temporalio import activity
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from prodline.contracts import (
    LANE_QUERY,
    LANE_REQUEST,
    LANE_SIGNAL,
    LEDGER_WORKFLOW,
    PROVE_RECORD,
    RECORD_DEPLOYMENT,
    RECORD_SIGNAL,
    RECORDS_QUERY,
    RELEASE_WORKFLOW,
    UNPROVEN_RECORD,
    DeploymentRecord,
    LaneRequest,
    LaneView,
    LedgerState,
    ledger_id,
    record_digest,
)


class LedgerActivities:
    """Activities that need a Temporal client to reach ledger workflows."""

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name=RECORD_DEPLOYMENT)
    async def record_deployment(self, record: DeploymentRecord) -> str:
        """Send the record to the ledger. Its digest is the result: kept in the release's own
        history (the local activity's marker), where :func:`prove_record` finds it."""
        await self._signal(record.application, record.service, record.environment, RECORD_SIGNAL, record)
        return record_digest(record)

    @activity.defn(name=PROVE_RECORD)
    async def prove_deployment(self, record: DeploymentRecord) -> None:
        """An automatic rollback's check of the record it is about to re-deploy."""
        try:
            await prove_record(self._client, record)
        except UnprovenRecord as exc:
            raise ApplicationError(str(exc), type=UNPROVEN_RECORD, non_retryable=True) from None

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


class UnprovenRecord(Exception):
    """A ledger record no release's history holds: forged, or recorded before records were proven."""


async def prove_record(client: Client, record: DeploymentRecord) -> None:
    """Check that the release the record names sent exactly this record (UnprovenRecord if not).

    A ledger takes ``record`` signals from anyone who can write to the namespace; what a
    rollback re-deploys and a drift check runs comes from a record, so it must be one a
    release workflow recorded: its history (which only the workers write) holds the
    record's digest as the result of its ``record_deployment`` local activity. Every run
    of the release is searched (a release that failed later, and ran again, recorded the
    environments it did pass in its first run).
    """
    digest = record_digest(record)
    async for run in client.list_workflows(f'WorkflowId = "{record.release_id}"'):  # newest first
        if await _run_recorded(client, record.release_id, run.run_id, digest):
            return
    raise UnprovenRecord(
        f"the ledger's record of {record.version} in {record.environment} ({record.release_id}) is not one its "
        "release recorded: no history of that release holds it (it was sent to the ledger by hand, or recorded "
        "before records were proven, or the namespace's retention has removed the release's history); release "
        "that version again to deploy it"
    )


async def _run_recorded(client: Client, release_id: str, run_id: str, digest: str) -> bool:
    handle = client.get_workflow_handle(release_id, run_id=run_id)
    try:
        history = await handle.fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    events = history.events
    if not events or events[0].workflow_execution_started_event_attributes.workflow_type.name != RELEASE_WORKFLOW:
        return False  # a workflow of another type under a release's ID
    return any(
        e.HasField("marker_recorded_event_attributes") and _records(e.marker_recorded_event_attributes, digest)
        for e in events
    )


def _records(marker: MarkerRecordedEventAttributes, digest: str) -> bool:
    """Whether a marker is a ``record_deployment`` local activity that returned ``digest``."""
    try:
        data = json.loads(marker.details["data"].payloads[0].data)
        result = marker.details["result"].payloads[0].data
    except (KeyError, IndexError, ValueError):
        return False
    return data.get("activity_type") == RECORD_DEPLOYMENT and json.loads(result) == digest
