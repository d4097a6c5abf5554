"""The baseline: a plain Temporal workflow running no-op activities in sequence.

Kept free of prodline imports so the workflow sandbox imports it as is; the
engine-overhead benchmark runs it next to the Release workflow on the same
server, with the same worker options and data converter. Its input is the
sequence to run: ``"activity"`` for a (remote) activity, ``"local"`` for a local
activity, so it can mirror what one release schedules.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

RAW_WORKFLOW = "BenchRaw"
ACTIVITY, LOCAL = "activity", "local"


@activity.defn(name="bench.noop")
async def noop(index: int) -> int:
    return index


@workflow.defn(name=RAW_WORKFLOW)
class RawWorkflow:
    @workflow.run
    async def run(self, plan: list[str]) -> int:
        options: dict[str, Any] = dict(
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
        for index, kind in enumerate(plan):
            if kind == LOCAL:
                await workflow.execute_local_activity(noop, index, **options)
            else:
                await workflow.execute_activity(noop, index, **options)
        return len(plan)
