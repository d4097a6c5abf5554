"""The whole status of a release that has ended, read from Temporal alone.

A running release answers its status query through a worker. One that has
ended must not need a worker to show what happened:

* a release keeps its final status in its memo (``FINAL_STATUS_MEMO``) when
  it ends, whatever the ending: one ``describe`` reads it;
* a succeeded release also returns its status as its result;
* otherwise (a release that ended before the memo existed, or was terminated)
  its history is replayed here with the workflow's own code, and the status is
  read from the workflow object afterwards: the very answer the status query
  would give, with no worker and no guessing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError

from prodline.contracts import FINAL_STATUS_MEMO, ReleaseStatus
from prodline.workflows.release import ReleaseWorkflow


async def closed_status(client: Client, description: WorkflowExecutionDescription) -> ReleaseStatus | None:
    """The final status of a release that has ended (None if even a replay cannot tell)."""
    memo = await description.memo_value(FINAL_STATUS_MEMO, None, type_hint=ReleaseStatus)
    if memo is not None:
        return memo
    if description.status == WorkflowExecutionStatus.COMPLETED:
        handle = client.get_workflow_handle_for(ReleaseWorkflow.run, description.id, run_id=description.run_id)
        try:
            return await handle.result(follow_runs=False)
        except (RPCError, ValueError):
            pass  # an unreadable result: the replay below still knows
    return await replayed_status(client, description)


async def replayed_status(client: Client, description: WorkflowExecutionDescription) -> ReleaseStatus | None:
    """Replay the release's history here and read the status its workflow object holds at the end."""
    # Imported here: only a closed release that left no status elsewhere pays for the worker package.
    from temporalio.worker import (
        ExecuteWorkflowInput,
        Interceptor,
        Replayer,
        UnsandboxedWorkflowRunner,
        WorkflowInboundInterceptor,
        WorkflowInterceptorClassInput,
    )

    instances: list[ReleaseWorkflow] = []

    class _Keep(WorkflowInboundInterceptor):
        async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
            run: Callable[..., Awaitable[Any]] = input.run_fn  # unbound: the SDK passes the instance first

            async def keeping(instance: ReleaseWorkflow, *args: Any) -> Any:
                instances.append(instance)
                return await run(instance, *args)

            input.run_fn = keeping
            return await super().execute_workflow(input)

    class _KeepInstance(Interceptor):
        def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
            return _Keep

    try:
        history = await client.get_workflow_handle(description.id, run_id=description.run_id).fetch_history()
        replayer = Replayer(
            workflows=[ReleaseWorkflow],
            interceptors=[_KeepInstance()],
            data_converter=client.data_converter,
            # Our own deterministic code, read back only: the sandbox would only add start-up time.
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    except Exception:  # best effort: a status that cannot be rebuilt shows as missing, never as a crash
        return None
    if result.replay_failure is not None or not instances:
        return None  # this code cannot replay that history (another version wrote it)
    return instances[0].status()
