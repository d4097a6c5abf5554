"""The prodline worker: the release and ledger workflows plus every activity."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from prodline.activities import steps
from prodline.activities.ledger import LedgerActivities
from prodline.activities.rules import RuleActivities
from prodline.workflows.ledger import DeploymentLedgerWorkflow
from prodline.workflows.release import ReleaseWorkflow

WORKFLOWS = [ReleaseWorkflow, DeploymentLedgerWorkflow]


def build_worker(client: Client, task_queue: str, **options) -> Worker:
    ledger = LedgerActivities(client)
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[*steps.ACTIVITIES, RuleActivities(client).evaluate_rule, ledger.record_deployment],
        **options,
    )


async def run_until(worker: Worker, stop: asyncio.Event) -> None:
    """Run the worker until ``stop`` is set, then shut it down gracefully."""
    async with worker:
        await stop.wait()
