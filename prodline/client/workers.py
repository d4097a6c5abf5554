"""Whether a worker takes a release's work: what ``start`` and ``--wait`` warn about.

A release with no worker waits in silence, so the CLI says so. Two signs, both
read from Temporal:

* The release's own task queue has no *recent* poller. Temporal keeps a poller
  in the queue's list for minutes after its worker died, so being listed is not
  enough. A live worker polls again at least once per long poll (a minute on
  the server side), so a poller last seen more than :data:`FRESH` ago is gone.
* The release's work has waited for a worker: a workflow task or an activity
  scheduled and not started for longer than the caller's ``stall``. That shows
  a worker that died a moment ago, which still looks fresh in the list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.service import RPCError

from prodline.config.durations import format_duration

# A long poll lasts up to a minute, then the worker polls again: ten seconds of slack.
FRESH = timedelta(seconds=70)


async def polling(client: Client, queue: str, *, activities: bool = False) -> bool:
    """Whether a live worker polls ``queue`` for workflow tasks (and, with ``activities``, activity tasks)."""
    now = datetime.now(UTC)
    kinds = [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW]
    if activities:
        kinds.append(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    for kind in kinds:
        request = DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
        response = await client.workflow_service.describe_task_queue(request, timeout=timedelta(seconds=5))
        if not any(now - p.last_access_time.ToDatetime(UTC) < FRESH for p in response.pollers):
            return False
    return True


def waiting_for_a_worker(description: WorkflowExecutionDescription, now: datetime | None = None) -> timedelta:
    """How long the release's oldest scheduled, unstarted task has waited (zero when none waits)."""
    now = now or datetime.now(UTC)
    raw = description.raw_description
    scheduled = []
    task = raw.pending_workflow_task
    if (
        raw.HasField("pending_workflow_task")
        and task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED
    ):
        scheduled.append(task.scheduled_time.ToDatetime(UTC))
    scheduled += [
        a.scheduled_time.ToDatetime(UTC)
        for a in raw.pending_activities
        if a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED and a.HasField("scheduled_time")
    ]
    # A retry's scheduled time lies ahead until its backoff ends: that is not waiting for a worker.
    return max((now - at for at in scheduled if at <= now), default=timedelta(0))


async def problem(
    client: Client, queue: str, description: WorkflowExecutionDescription | None = None, stall: timedelta | None = None
) -> str | None:
    """Why the release on ``queue`` does not move for want of a worker, or None when one takes its work."""
    try:
        live = await polling(client, queue)
    except RPCError:
        return None  # cannot tell; the release itself is fine
    if not live:
        return (
            f"no worker is polling task queue {queue!r}; the release does not move until one does "
            "(start `prodline dev` or `prodline worker`)"
        )
    if description is not None and stall is not None:
        waited = waiting_for_a_worker(description)
        if waited >= stall:
            return (
                f"the release's work has waited {format_duration(timedelta(seconds=round(waited.total_seconds())))} "
                f"on task queue {queue!r} and no worker took it (did the worker stop, or is it overloaded?)"
            )
    return None
