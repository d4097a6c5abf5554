"""Step activities: one generic activity per action, dispatching on the step's kind.

Adding a step kind means adding a runner module and one line in ``RUNNERS``;
the workflow keeps calling ``apply_step`` and never learns the difference.
"""

from __future__ import annotations

from temporalio import activity

from prodline.contracts import APPLY_STEP, FETCH_STEP, PLAN_STEP, StepResult, StepRun

from .base import StepRunner
from .command import CommandRunner
from .pulumi import PulumiRunner
from .terraform import TerraformRunner

RUNNERS: dict[str, StepRunner] = {
    "command": CommandRunner(),
    "terraform": TerraformRunner(),
    "pulumi": PulumiRunner(),
}


def _runner(run: StepRun) -> StepRunner:
    return RUNNERS[run.step.kind]


@activity.defn(name=PLAN_STEP)
async def plan_step(run: StepRun) -> StepResult:
    """Show what applying the step would change."""
    return await _runner(run).plan(run)


@activity.defn(name=APPLY_STEP)
async def apply_step(run: StepRun) -> StepResult:
    """Make the environment match the step; must converge when run twice."""
    return await _runner(run).apply(run)


@activity.defn(name=FETCH_STEP)
async def fetch_step(run: StepRun) -> StepResult:
    """Tell whether what is live differs from what was applied (drift)."""
    return await _runner(run).fetch(run)


ACTIVITIES = [plan_step, apply_step, fetch_step]

__all__ = ["ACTIVITIES", "RUNNERS", "StepResult", "StepRun", "apply_step", "fetch_step", "plan_step"]
