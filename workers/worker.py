"""The prodline worker: the release, ledger and application workflows plus every activity.

One process serves one task queue. On the control queue it runs the workflows and
resolves releases; on an environment's own queue (``task_queue:`` in the application
file) it runs that environment's steps and rules, with that environment's credentials.
Registering everything everywhere keeps one worker command; Temporal only hands a
worker the tasks of its queue.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from prodline.activities import steps
from prodline.activities.ledger import LedgerActivities
from prodline.activities.resolve import ResolveActivities
from prodline.activities.rules import RuleActivities
from prodline.workflows.application import ApplicationWorkflow
from prodline.workflows.ledger import DeploymentLedgerWorkflow
from prodline.workflows.release import ReleaseWorkflow

WORKFLOWS = [ReleaseWorkflow, DeploymentLedgerWorkflow, ApplicationWorkflow]

HEARTBEAT_THROTTLE = timedelta(seconds=2)


def build_worker(client: Client, task_queue: str, **options) -> Worker:
    ledger = LedgerActivities(client)
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    # A running step learns of a cancel only from a heartbeat's answer; the SDK sends heartbeats
    # at most every 0.8 x heartbeat_timeout (24 s by default). Cap that, so a cancel stops a
    # running command within seconds (steps heartbeat every 2 s, see activities/process.py).
    options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *steps.ACTIVITIES,
            RuleActivities(client).evaluate_rule,
            ledger.record_deployment,
            ResolveActivities(client).resolve_release,
        ],
        **options,
    )


async def run_until(worker: Worker, stop: asyncio.Event) -> None:
    """Run the worker until ``stop`` is set, then shut it down gracefully."""
    async with worker:
        await stop.wait()
