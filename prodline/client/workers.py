"""Whether workers take a release's work: what ``start``, ``--wait`` and ``status`` warn about.

A release with no worker waits in silence, so the CLI says so, naming the task queue
nobody serves. A release has work on more than one queue: the workflow runs on the
control queue, and an environment that names a ``task_queue`` runs its steps and rules
there, on workers of its own (its "runtime"). Two signs, both read from Temporal:

* A queue the release needs has no *recent* poller: the control queue for the
  workflow's tasks, and the queue of every activity it has scheduled (Temporal's
  description of the release says where each one waits) for activity tasks. Temporal
  keeps a poller in the queue's list for minutes after its worker died, so being
  listed is not enough. A live worker polls again at least once per long poll (a
  minute on the server side), so a poller last seen more than :data:`FRESH` ago is gone.
* The release's work has waited for a worker: a workflow task or an activity
  scheduled and not started for longer than the caller's ``stall``. That shows a
  worker that died a moment ago, which still looks fresh in the list.

The release's status (when the caller has it) says which environment runs on which
queue, so the warning can say "task queue 'prod-runtime' (environment production)".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.service import RPCError

from prodline.config.durations import format_duration
from prodline.contracts import Phase, ReleaseStatus

# A long poll lasts up to a minute, then the worker polls again: ten seconds of slack.
FRESH = timedelta(seconds=70)

_ACTIVE = (Phase.running, Phase.waiting)


async def polling(client: Client, queue: str, *, activities: bool = False, workflows: bool = True) -> bool:
    """Whether a live worker polls ``queue`` for workflow tasks and, with ``activities``, activity tasks
    (``workflows=False``: activity tasks only, what an environment's queue is for)."""
    now = datetime.now(UTC)
    kinds = [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW] if workflows else []
    if activities or not workflows:
        kinds.append(TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    for kind in kinds:
        request = DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
        response = await client.workflow_service.describe_task_queue(request, timeout=timedelta(seconds=5))
        if not any(now - p.last_access_time.ToDatetime(UTC) < FRESH for p in response.pollers):
            return False
    return True


@dataclass(frozen=True)
class Scheduled:
    """A task of the release that Temporal has scheduled and no worker has started yet."""

    queue: str
    at: datetime


def pending_activity_queues(
    description: WorkflowExecutionDescription, status: ReleaseStatus | None = None
) -> list[str]:
    """The task queues of the release's pending activities (scheduled or running), in order, once each.

    Temporal records each activity's queue with it; a server too old to say is taken to
    run it where the release's current environment runs (from ``status``), else on the
    release's own queue.
    """
    queues: list[str] = []
    for activity in description.raw_description.pending_activities:
        queue = activity.activity_options.task_queue.name or _current_queue(description, status)
        if queue not in queues:
            queues.append(queue)
    return queues


def scheduled(description: WorkflowExecutionDescription, status: ReleaseStatus | None = None) -> list[Scheduled]:
    """The release's tasks that wait for a worker: its workflow task and its unstarted activities."""
    raw = description.raw_description
    tasks = []
    task = raw.pending_workflow_task
    if (
        raw.HasField("pending_workflow_task")
        and task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED
    ):
        tasks.append(Scheduled(description.task_queue, task.scheduled_time.ToDatetime(UTC)))
    tasks += [
        Scheduled(
            a.activity_options.task_queue.name or _current_queue(description, status),
            a.scheduled_time.ToDatetime(UTC),
        )
        for a in raw.pending_activities
        if a.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED and a.HasField("scheduled_time")
    ]
    return tasks


def waiting_for_a_worker(
    description: WorkflowExecutionDescription, now: datetime | None = None, status: ReleaseStatus | None = None
) -> timedelta:
    """How long the release's oldest scheduled, unstarted task has waited (zero when none waits)."""
    oldest = _oldest(scheduled(description, status), now or datetime.now(UTC))
    return oldest[1] if oldest else timedelta(0)


def where(queue: str, status: ReleaseStatus | None) -> str:
    """``queue`` as a warning names it: with the environments that run there, when known."""
    if status is not None:
        names = [e.name for e in status.environments if e.task_queue == queue]
        if names:
            label = "environment" if len(names) == 1 else "environments"
            return f"task queue {queue!r} ({label} {', '.join(names)})"
    return f"task queue {queue!r}"


async def problem(
    client: Client,
    queue: str,
    description: WorkflowExecutionDescription | None = None,
    stall: timedelta | None = None,
    status: ReleaseStatus | None = None,
) -> str | None:
    """Why the release (whose workflow runs on ``queue``) does not move for want of a worker, or None.

    With ``description`` the queues of its pending activities are checked too (an
    environment's own queue), and with ``stall`` how long its work has waited; ``status``
    names the environments behind a queue.
    """
    try:
        if not await polling(client, queue):
            return (
                f"no worker is polling task queue {queue!r}; the release does not move until one does "
                f"(start `prodline dev` or `prodline worker --task-queue {queue}`)"
            )
        if description is None:
            return None
        for other in pending_activity_queues(description, status):
            if other != queue and not await polling(client, other, workflows=False):
                return (
                    f"no worker is polling {where(other, status)}; the release does not move until one "
                    f"does (start `prodline worker --runtime --task-queue {other}` {_runtime(other, status)})"
                )
    except RPCError:
        return None  # cannot tell; the release itself is fine
    if stall is not None:
        oldest = _oldest(scheduled(description, status), datetime.now(UTC))
        if oldest is not None and oldest[1] >= stall:
            stuck, waited = oldest
            return (
                f"the release's work has waited {format_duration(timedelta(seconds=round(waited.total_seconds())))} "
                f"on {where(stuck, status)} and no worker took it (did the worker stop, or is it overloaded?)"
            )
    return None


async def unserved(client: Client, queues: Mapping[str, str]) -> list[str]:
    """What to warn of before a release gets there: the environments (``{name: task queue}``, as the
    application names them; empty: the control queue) whose own queue no live worker polls."""
    by_queue: dict[str, list[str]] = {}
    for name, queue in queues.items():
        if queue:
            by_queue.setdefault(queue, []).append(name)
    warnings = []
    for queue, names in by_queue.items():
        try:
            if await polling(client, queue, workflows=False):
                continue
        except RPCError:
            continue  # cannot tell; the check on the way says so if it stays unserved
        label = "environment" if len(names) == 1 else "environments"
        warnings.append(
            f"no worker is polling task queue {queue!r} ({label} {', '.join(names)}); the release will wait "
            f"there until one does (start `prodline worker --runtime --task-queue {queue}` where {' and '.join(names)} runs)"
        )
    return warnings


def _oldest(tasks: Iterable[Scheduled], now: datetime) -> tuple[str, timedelta] | None:
    # A retry's scheduled time lies ahead until its backoff ends: that is not waiting for a worker.
    waits = [(task.queue, now - task.at) for task in tasks if task.at <= now]
    return max(waits, key=lambda wait: wait[1], default=None)


def _current_queue(description: WorkflowExecutionDescription, status: ReleaseStatus | None) -> str:
    if status is not None:
        for env in status.environments:
            if env.phase in _ACTIVE and env.task_queue:
                return env.task_queue
    return description.task_queue


def _runtime(queue: str, status: ReleaseStatus | None) -> str:
    names = [e.name for e in status.environments if e.task_queue == queue] if status is not None else []
    return f"where {' and '.join(names)} runs" if names else "where that environment runs"
