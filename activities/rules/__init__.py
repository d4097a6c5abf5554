"""Rule activities: one generic ``evaluate_rule`` dispatching on the rule's kind."""

from __future__ import annotations

from temporalio import activity

from .base import Outcome, RuleEvaluator, RuleResult, RuleRun
from .command import CommandEvaluator

EVALUATORS: dict[str, RuleEvaluator] = {
    "command": CommandEvaluator(),
}


@activity.defn(name="prodline.evaluate_rule")
async def evaluate_rule(run: RuleRun) -> RuleResult:
    """Evaluate a precondition or check once."""
    return await EVALUATORS[run.rule.kind].evaluate(run)


ACTIVITIES = [evaluate_rule]

__all__ = ["ACTIVITIES", "EVALUATORS", "Outcome", "RuleResult", "RuleRun", "evaluate_rule"]
