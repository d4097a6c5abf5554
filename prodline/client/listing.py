"""Finding releases through Temporal visibility, newest start first.

Filters are prodline's search attributes. ``environment`` matches
``ProdlineEnvironment``: the environment a release is in now or, once it has
ended, the last one it reached (where it stopped, or production when it
succeeded); it does not match environments the release passed through earlier.

Newest first means by start time. Advanced visibility (Elasticsearch, Temporal
Cloud) sorts with ``ORDER BY StartTime DESC``. SQL visibility, the dev
server's SQLite included, refuses ``ORDER BY`` and lists running workflows
first, then closed ones by close time; there the newest ``limit`` are found
without reading every release: a release closes after it starts, so once a
closed one closed before the ``limit``-th newest start seen so far, nothing
after it in that order is newer.
"""

from __future__ import annotations

import contextlib
import heapq
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from prodline.contracts import RELEASE_WORKFLOW, ReleaseState
from prodline.errors import InvalidInput
from prodline.workflows import search_attributes as sa

from . import setup

# What a release's search attribute cannot say, because Temporal ended it.
_STATE_BY_STATUS = {
    WorkflowExecutionStatus.TERMINATED: ReleaseState.failed,
    WorkflowExecutionStatus.CANCELED: ReleaseState.cancelled,
    WorkflowExecutionStatus.TIMED_OUT: ReleaseState.timed_out,
}


@dataclass(frozen=True)
class ListedRelease:
    """One row of ``release list``."""

    release_id: str
    run_id: str
    application: str | None
    service: str | None
    version: str | None
    environment: str | None
    state: str
    started_at: datetime | None
    closed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "run_id": self.run_id,
            "application": self.application,
            "service": self.service,
            "version": self.version,
            "environment": self.environment,
            "state": self.state,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


def visibility_query(
    application: str | None = None,
    service: str | None = None,
    environment: str | None = None,
    state: str | None = None,
) -> str:
    clauses = [f"WorkflowType = '{RELEASE_WORKFLOW}'"]
    for key, value in (
        (sa.APPLICATION, application),
        (sa.SERVICE, service),
        (sa.ENVIRONMENT, environment),
        (sa.STATE, state),
    ):
        if value:
            if any(c in value for c in "'\"\\"):
                raise InvalidInput(f"invalid filter value {value!r}")
            clauses.append(f"{key.name} = '{value}'")
    return " AND ".join(clauses)


async def newest(client: Client, query: str, limit: int) -> list[ListedRelease]:
    """Up to ``limit`` releases matching ``query``, newest start first."""
    try:
        found = [wf async for wf in client.list_workflows(f"{query} ORDER BY StartTime DESC", limit=limit)]
    except RPCError as exc:
        await setup.raise_if_not_set_up(client, exc)
        if exc.status != RPCStatusCode.INVALID_ARGUMENT or "order by" not in exc.message.lower():
            raise
        found = await _newest_without_order_by(client, query, limit)
    if not found:
        # Nothing can have started without the search attributes: say so if that is why the list is
        # empty. Without operator permission there is no telling, and an empty list is the answer.
        with contextlib.suppress(RPCError):
            await setup.check(client)
    return [_row(wf) for wf in found]


async def _newest_without_order_by(client: Client, query: str, limit: int) -> list[WorkflowExecution]:
    found: list[WorkflowExecution] = []
    starts: list[datetime] = []  # min-heap of the `limit` newest start times seen
    async for wf in client.list_workflows(query, page_size=max(limit, 100)):
        if len(starts) >= limit and wf.close_time is not None and wf.close_time < starts[0]:
            break
        found.append(wf)
        if wf.start_time is not None:
            heapq.heappush(starts, wf.start_time)
            if len(starts) > limit:
                heapq.heappop(starts)
    found.sort(key=lambda wf: wf.start_time.timestamp() if wf.start_time else 0.0, reverse=True)
    return found[:limit]


def _row(wf: WorkflowExecution) -> ListedRelease:
    attrs = wf.typed_search_attributes
    ended = _STATE_BY_STATUS.get(wf.status) if wf.status is not None else None
    return ListedRelease(
        release_id=wf.id,
        run_id=wf.run_id,
        application=attrs.get(sa.APPLICATION),
        service=attrs.get(sa.SERVICE),
        version=attrs.get(sa.VERSION),
        environment=attrs.get(sa.ENVIRONMENT),
        state=ended.value if ended else attrs.get(sa.STATE) or "",
        started_at=wf.start_time,
        closed_at=wf.close_time,
    )
