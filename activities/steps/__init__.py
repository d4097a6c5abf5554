"""Step activities: one generic activity per action, dispatching on the step's kind.

Adding a step kind: a ``StepSpec`` model and its field on ``Step`` in
``config/steps.py``, a runner module here (a ``StepRunner`` subclass naming
that model as ``spec_type``), its instance in ``RUNNERS`` below, and the
README. ``tests/test_kinds.py`` fails while any of these is missing. The
workflow keeps calling the activities by name and never learns the difference.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from prodline.config.steps import step_kinds
from prodline.contracts import (
    ABORT_STEP,
    APPLY_STEP,
    FETCH_STEP,
    PLAN_STEP,
    PROMOTE_STEP,
    WAIT_STEP,
    StepAction,
    StepProgress,
    StepResult,
    StepRun,
)

from ..registry import by_declared_model
from ..workspace import attempt_workspace
from .base import StepRunner
from .command import CommandRunner
from .kubernetes import KubernetesRunner
from .pulumi import PulumiRunner
from .rollout import RolloutRunner
from .terraform import TerraformRunner


def by_kind(runners: list[StepRunner[Any]]) -> dict[str, StepRunner[Any]]:
    """Key each runner by the step kind whose model it declares; refuse one no kind has."""
    return by_declared_model(runners, step_kinds(), "step kind (a field of Step)")


RUNNERS = by_kind([CommandRunner(), TerraformRunner(), PulumiRunner(), KubernetesRunner(), RolloutRunner()])


def _runner(run: StepRun) -> StepRunner[Any]:
    return RUNNERS[run.step.kind]


@activity.defn(name=PLAN_STEP)
async def plan_step(run: StepRun) -> StepResult:
    """Show what applying the step would change."""
    async with attempt_workspace(run.context):
        return await _runner(run).plan(run, run.step.spec)


@activity.defn(name=APPLY_STEP)
async def apply_step(run: StepRun) -> StepResult:
    """Make the environment match the step; must converge when run twice."""
    async with attempt_workspace(run.context):
        return await _runner(run).apply(run, run.step.spec)


@activity.defn(name=FETCH_STEP)
async def fetch_step(run: StepRun) -> StepResult:
    """Tell whether what is live differs from what was applied (drift)."""
    async with attempt_workspace(run.context):
        return await _runner(run).fetch(run, run.step.spec)


@activity.defn(name=WAIT_STEP)
async def wait_step(run: StepRun) -> StepProgress:
    """Wait until what apply deployed is healthy, or stopped at a canary pause. Applies nothing,
    so a retry on another worker (this one died while waiting) only waits again."""
    return await _runner(run).wait(run, run.step.spec)


@activity.defn(name=PROMOTE_STEP)
async def promote_step(action: StepAction) -> StepProgress:
    """Go on from the pause the workflow saw (never past a step still running)."""
    return await _runner(action.run).promote(action, action.run.step.spec)


@activity.defn(name=ABORT_STEP)
async def abort_step(action: StepAction) -> StepProgress:
    """Give up: send the traffic back to the stable version."""
    return await _runner(action.run).abort(action, action.run.step.spec)


ACTIVITIES = [plan_step, apply_step, fetch_step, wait_step, promote_step, abort_step]

__all__ = [
    "ACTIVITIES",
    "RUNNERS",
    "abort_step",
    "apply_step",
    "by_kind",
    "fetch_step",
    "plan_step",
    "promote_step",
    "wait_step",
]
