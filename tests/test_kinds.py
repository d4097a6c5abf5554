"""Every step kind and rule kind is one model plus one adapter; the registries agree.

Adding a kind is a model (a field of ``Step`` or of the rule kinds), an adapter
module with one registration line, and the README; these tests fail while
either half is missing.
"""

from __future__ import annotations

import pytest

from prodline.activities.steps import RUNNERS, by_kind
from prodline.activities.steps.base import StepRunner
from prodline.config.steps import CommandStep, StepSpec, step_kinds
from prodline.contracts import StepResult, StepRun


def test_every_step_kind_has_a_runner_for_its_own_model():
    assert set(RUNNERS) == set(step_kinds())
    for kind, runner in RUNNERS.items():
        assert runner.spec_type is step_kinds()[kind], f"the {kind} runner declares another kind's model"


def test_a_runner_for_a_model_that_is_no_step_kind_is_refused():
    class Orphan(StepSpec):
        pass

    class OrphanRunner(StepRunner[Orphan]):
        spec_type = Orphan

        async def plan(self, run: StepRun, spec: Orphan) -> StepResult:
            return StepResult()

        async def apply(self, run: StepRun, spec: Orphan) -> StepResult:
            return StepResult()

        async def fetch(self, run: StepRun, spec: Orphan) -> StepResult:
            return StepResult()

    with pytest.raises(TypeError, match="Orphan is no field of Step"):
        by_kind([OrphanRunner()])


def test_a_runner_missing_an_action_cannot_be_built():
    class Incomplete(StepRunner[CommandStep]):
        spec_type = CommandStep

        async def plan(self, run: StepRun, spec: CommandStep) -> StepResult:
            return StepResult()

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
