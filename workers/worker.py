"""The prodline worker: the release, ledger and application workflows plus every activity.

One process serves one task queue, in one of two roles:

* **control** (``prodline worker``): the release, ledger and application workflows, the
  resolving of plans, and the steps and rules of environments that name no queue of their own;
* **runtime** (``prodline worker --runtime --task-queue Q``): only the steps and rules of the
  environment whose ``task_queue:`` is Q, with that environment's credentials.

A runtime worker registers no workflow on purpose: the task queue of a release is chosen by
whoever starts it (``--task-queue``), and a release started on production's queue must not
find a worker there that would run it, and with it the steps of environments that name no
queue, next to production's credentials. Nobody runs such a release; it waits, warned of.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from prodline.activities import steps
from prodline.activities.admins import admit_apply
from prodline.activities.drift import DriftActivities
from prodline.activities.ledger import LedgerActivities
from prodline.activities.resolve import ResolveActivities
from prodline.activities.rules import RuleActivities
from prodline.activities.workspace import sweep_workspaces
from prodline.workflows.application import ApplicationWorkflow
from prodline.workflows.drift import DriftCheckWorkflow
from prodline.workflows.ledger import DeploymentLedgerWorkflow
from prodline.workflows.release import ReleaseWorkflow

from .sandbox import WORKFLOW_RUNNER

WORKFLOWS = [ReleaseWorkflow, DeploymentLedgerWorkflow, ApplicationWorkflow, DriftCheckWorkflow]

HEARTBEAT_THROTTLE = timedelta(seconds=2)


def build_worker(client: Client, task_queue: str, *, runtime: bool = False, **options) -> Worker:
    # Attempt folders a killed worker left behind (each attempt removes its own otherwise).
    sweep_workspaces()
    ledger = LedgerActivities(client)
    drift = DriftActivities(client)
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    # A running step learns of a cancel only from a heartbeat's answer; the SDK sends heartbeats
    # at most every 0.8 x heartbeat_timeout (24 s by default). Cap that, so a cancel stops a
    # running command within seconds (steps heartbeat every 2 s, see activities/process.py).
    options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    step_and_rule_activities = [*steps.ACTIVITIES, RuleActivities(client).evaluate_rule]
    if runtime:
        return Worker(client, task_queue=task_queue, activities=step_and_rule_activities, **options)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        workflow_runner=WORKFLOW_RUNNER,
        activities=[
            *step_and_rule_activities,
            ledger.record_deployment,
            ledger.prove_deployment,
            ledger.lane_request,
            drift.ensure_drift_checks,
            drift.read_lane,
            ResolveActivities(client).resolve_release,
            admit_apply,
        ],
        **options,
    )


async def run_until(worker: Worker, stop: asyncio.Event) -> None:
    """Run the worker until ``stop`` is set, then shut it down gracefully."""
    async with worker:
        await stop.wait()
