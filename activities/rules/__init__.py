"""Rule activities: one generic ``evaluate_rule`` dispatching on the rule's kind.

Adding a rule kind means a model in ``config/rules.py``, an evaluator module
here and one line in :meth:`RuleActivities.evaluators`.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from prodline.contracts import EVALUATE_RULE

from .alerts import AlertsEvaluator
from .base import Outcome, RuleEvaluator, RuleResult, RuleRun
from .command import CommandEvaluator
from .http import HttpEvaluator
from .prometheus import PrometheusEvaluator
from .stable import StableEvaluator
from .window import WindowEvaluator


class RuleActivities:
    """Holds what evaluators need (a Temporal client for the ledger)."""

    def __init__(self, client: Client):
        self.evaluators: dict[str, RuleEvaluator] = {
            "command": CommandEvaluator(),
            "alerts": AlertsEvaluator(),
            "prometheus": PrometheusEvaluator(),
            "http": HttpEvaluator(),
            "window": WindowEvaluator(),
            "stable": StableEvaluator(client),
        }

    @activity.defn(name=EVALUATE_RULE)
    async def evaluate_rule(self, run: RuleRun) -> RuleResult:
        """Evaluate a precondition or check once."""
        return await self.evaluators[run.rule.kind].evaluate(run)


__all__ = ["Outcome", "RuleActivities", "RuleResult", "RuleRun"]
