"""How work inside a release ends: the exceptions the workflow steers by.

Activities fail with Temporal errors; the workflow turns them into one of
these, and the release's ``run`` turns those into its final state.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from prodline.config.steps import Step
    from prodline.contracts import ReleaseState


class StalePlan(Exception):
    """The state changed between a step's plan and its apply."""

    def __init__(self, step: Step, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


class ReleaseStopped(Exception):
    """Raised inside the workflow to end the release in a given state."""

    def __init__(self, state: ReleaseState, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


def stop_if_cancelled() -> None:
    """Honour a cancel request that the activity in flight swallowed.

    A cancel arriving while an activity runs goes to the activity; when the
    activity finishes anyway (rules do not heartbeat, and steps hear of it only
    at their next heartbeat), the SDK hands the workflow the activity's result
    and the request is gone. Checked before anything new starts or waits, so a
    cancelled release never goes on to the next step, check or environment.
    """
    if workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError()


def activity_failure(exc: ActivityError) -> str:
    """Why an activity failed, in one line for the release's reason."""
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name.lower().replace('_', '-') if cause.type else 'timeout'})"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)
