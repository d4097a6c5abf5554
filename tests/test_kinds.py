"""Every step kind and rule kind is one model plus one adapter; the registries agree.

Adding a kind is a model (a field of ``Step`` or of the rule kinds), an adapter
module with one registration line, and the README; these tests fail while
either half is missing.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from prodline.activities.rules import PEOPLE_KINDS, RuleActivities
from prodline.activities.rules import by_kind as evaluators_by_kind
from prodline.activities.rules.base import RuleEvaluator
from prodline.activities.steps import RUNNERS, by_kind
from prodline.activities.steps.base import StepRunner
from prodline.activities.steps.command import CommandRunner
from prodline.artifacts.store import open_store
from prodline.config.rules import ApprovalRule, Precondition, RuleSpec, rule_kinds
from prodline.config.steps import CommandStep, Step, StepSpec, step_kinds
from prodline.contracts import (
    NON_RETRYABLE_CONFIG,
    Outcome,
    RuleResult,
    RuleRun,
    StepResult,
    StepRun,
)

from conftest import FAST_STEP, run_context, service


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

    with pytest.raises(TypeError, match="Orphan is no step kind"):
        by_kind([OrphanRunner()])


def test_a_runner_missing_an_action_cannot_be_built():
    class Incomplete(StepRunner[CommandStep]):
        spec_type = CommandStep

        async def plan(self, run: StepRun, spec: CommandStep) -> StepResult:
            return StepResult()

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


# --- rule kinds ----------------------------------------------------------------------------------


def rule_activities() -> RuleActivities:
    # A client that never connects: building the registry evaluates nothing.
    return RuleActivities(asyncio.run(Client.connect("127.0.0.1:1", lazy=True)))


def test_every_rule_kind_has_an_evaluator_for_its_own_model_or_is_decided_by_people():
    evaluators = rule_activities().evaluators
    assert set(evaluators) | PEOPLE_KINDS == set(rule_kinds())
    assert not set(evaluators) & PEOPLE_KINDS, "a kind people decide has an evaluator too"
    for kind, evaluator in evaluators.items():
        assert evaluator.spec_type is rule_kinds()[kind], f"the {kind} evaluator declares another kind's model"


class OrphanRule(RuleSpec):
    @property
    def evaluation_budget(self) -> timedelta:
        return timedelta(seconds=1)


class OrphanEvaluator(RuleEvaluator[OrphanRule]):
    spec_type = OrphanRule

    async def evaluate(self, run: RuleRun, spec: OrphanRule) -> RuleResult:
        return RuleResult(outcome=Outcome.passed)


class ApprovalEvaluator(RuleEvaluator[ApprovalRule]):
    spec_type = ApprovalRule

    async def evaluate(self, run: RuleRun, spec: ApprovalRule) -> RuleResult:
        return RuleResult(outcome=Outcome.passed)


def test_an_evaluator_for_a_model_that_is_no_rule_kind_is_refused():
    with pytest.raises(TypeError, match=r"OrphanEvaluator\.spec_type OrphanRule is no rule kind"):
        evaluators_by_kind([OrphanEvaluator()])


def test_an_evaluator_for_a_kind_people_decide_is_refused():
    with pytest.raises(TypeError, match="approval rules are decided by people in the workflow, not evaluated"):
        evaluators_by_kind([ApprovalEvaluator()])


def test_a_people_kind_sent_to_the_rule_activity_fails_without_retries():
    approval = Precondition.model_validate({"approval": {"approvers": ["alice"]}})
    context = run_context()
    with pytest.raises(ApplicationError) as caught:
        asyncio.run(rule_activities().evaluate_rule(RuleRun(context=context, rule=approval)))
    assert caught.value.non_retryable and caught.value.type == NON_RETRYABLE_CONFIG
    assert caught.value.message == "approval rules are not evaluated by an activity (rule approval)"


# --- the command step's failure reason -----------------------------------------------------------

MULTI_LINE_MIGRATE = (
    """\
  - name: migrate
    command:
      apply: |
        echo "migrating to $PRODLINE_VERSION"
        echo "column exists" >&2
        exit 3
"""
    + FAST_STEP
)


def test_a_failing_multi_line_apply_is_named_by_its_first_line(cli, worker, project):
    service_file = project(service(MULTI_LINE_MIGRATE))
    result = cli.run("release", "start", str(service_file), "--version", "6.0.0", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["reason"] == (
        'staging: step migrate failed: `echo "migrating to $PRODLINE_VERSION"…` exited with code 3: '
        "migrating to 6.0.0\ncolumn exists"
    )


def test_a_secret_in_a_failed_command_line_is_masked_before_the_line_is_cut(tmp_path):
    # The secret straddles where the reason cuts the line: cut first, and its start would show.
    secret = "pw-" + "x7" * 30
    key = "test-kinds/masking/outputs.json"
    open_store().put(key, json.dumps({"password": secret}).encode())
    context = run_context(
        environment="staging", base_dir=str(tmp_path), sensitive_outputs={"steps.infra.outputs.password": key}
    )
    spec = CommandStep(apply="false --password {{ steps.infra.outputs.password }} --host db || exit 4\n./deploy.sh")
    with pytest.raises(ApplicationError) as caught:
        asyncio.run(CommandRunner().apply(StepRun(context=context, step=Step(name="deploy", command=spec)), spec))
    assert caught.value.message == "`false --password *** --host db || exit 4…` exited with code 4"


def test_sensitive_outputs_rewritten_in_the_store_are_refused_not_used(tmp_path):
    """A later step reads an earlier step's secret outputs from the store; whoever can write
    there (not history) must not be able to swap them: the digest the step reported is checked."""
    key = "test-kinds/tampered/outputs.json"
    digest = open_store().put(key, json.dumps({"url": "https://db.internal"}).encode())
    open_store().put(key, json.dumps({"url": "https://attacker.example"}).encode())  # rewritten later
    context = run_context(
        environment="staging",
        base_dir=str(tmp_path),
        sensitive_outputs={"steps.infra.outputs.url": key},
        output_digests={key: digest},
    )
    spec = CommandStep(apply="echo {{ steps.infra.outputs.url }} > used")
    with pytest.raises(ApplicationError) as caught:
        asyncio.run(CommandRunner().apply(StepRun(context=context, step=Step(name="deploy", command=spec)), spec))
    assert "checksum mismatch" in caught.value.message and caught.value.non_retryable
    assert not (tmp_path / "used").exists()
