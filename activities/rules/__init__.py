"""Rule activities: one generic ``evaluate_rule`` dispatching on the rule's kind.

Adding a rule kind: a ``RuleSpec`` model and its field in ``config/rules.py``,
an evaluator module here (a ``RuleEvaluator`` subclass naming that model as
``spec_type``), its instance in :class:`RuleActivities` below, and the README.
``tests/test_kinds.py`` fails while any of these is missing. Kinds that people
decide (``PEOPLE_KINDS``) have no evaluator: the workflow waits for their
decisions itself.
"""

from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from prodline.config.rules import rule_kinds
from prodline.contracts import EVALUATE_RULE, NON_RETRYABLE_CONFIG, RuleResult, RuleRun

from ..registry import by_declared_model
from ..workspace import attempt_workspace
from .alerts import AlertsEvaluator
from .base import Clock, RuleEvaluator, utc_now
from .command import CommandEvaluator
from .freeze import FreezeEvaluator
from .http import HttpEvaluator
from .prometheus import PrometheusEvaluator
from .stable import StableEvaluator
from .window import WindowEvaluator

# Rule kinds decided by people, by signal, in the workflow (workflows/gates.py): no activity
# evaluates them, so they have no evaluator, and one declaring their model is refused.
PEOPLE_KINDS = frozenset({"approval"})


def by_kind(evaluators: list[RuleEvaluator[Any]]) -> dict[str, RuleEvaluator[Any]]:
    """Key each evaluator by the rule kind whose model it declares; refuse one no kind has."""
    people = {kind: f"{kind} rules are decided by people in the workflow, not evaluated" for kind in PEOPLE_KINDS}
    return by_declared_model(evaluators, rule_kinds(), "rule kind", refused=people)


class RuleActivities:
    """The rule activity, with what its evaluators need from the world injected.

    ``client`` reads the deployment ledger (``stable``); ``transport`` carries the
    HTTP-based evaluators' requests (``None``: the network; tests pass an
    ``httpx.MockTransport``); ``clock`` is "now" for windows and soak times.
    """

    def __init__(self, client: Client, transport: httpx.AsyncBaseTransport | None = None, clock: Clock | None = None):
        clock = clock or utc_now
        self.evaluators = by_kind(
            [
                CommandEvaluator(),
                AlertsEvaluator(transport),
                PrometheusEvaluator(transport),
                HttpEvaluator(transport),
                WindowEvaluator(clock),
                StableEvaluator(client, clock),
                FreezeEvaluator(client, clock),
            ]
        )

    @activity.defn(name=EVALUATE_RULE)
    async def evaluate_rule(self, run: RuleRun) -> RuleResult:
        """Evaluate a precondition or check once."""
        kind = run.rule.kind
        evaluator = self.evaluators.get(kind)
        if evaluator is None:  # the workflow never sends these; say so if one arrives anyway
            raise ApplicationError(
                f"{kind} rules are not evaluated by an activity (rule {run.rule.label})",
                type=NON_RETRYABLE_CONFIG,
                non_retryable=True,
            )
        if run.rule.spec.evaluated_locally:
            # Inside the release's workflow task (a local activity): reads the clock and Temporal
            # only, so no bundle is checked out, and the task is held no longer than it must be.
            return await evaluator.evaluate(run, run.rule.spec)
        async with attempt_workspace(run.context):  # a command check runs the application's files
            return await evaluator.evaluate(run, run.rule.spec)


__all__ = ["PEOPLE_KINDS", "RuleActivities", "by_kind"]
