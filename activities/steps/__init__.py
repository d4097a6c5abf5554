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
from prodline.contracts import APPLY_STEP, FETCH_STEP, PLAN_STEP, StepResult, StepRun

from ..registry import by_declared_model
from ..workspace import attempt_workspace
from .base import StepRunner
from .command import CommandRunner
from .pulumi import PulumiRunner
from .terraform import TerraformRunner


def by_kind(runners: list[StepRunner[Any]]) -> dict[str, StepRunner[Any]]:
    """Key each runner by the step kind whose model it declares; refuse one no kind has."""
    return by_declared_model(runners, step_kinds(), "step kind (a field of Step)")


RUNNERS = by_kind([CommandRunner(), TerraformRunner(), PulumiRunner()])


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


ACTIVITIES = [plan_step, apply_step, fetch_step]

__all__ = ["ACTIVITIES", "RUNNERS", "apply_step", "by_kind", "fetch_step", "plan_step"]
