"""The interface every rule kind implements, and the values that cross it.

An evaluator answers one question once: does the rule hold right now? It
returns ``passed``, ``failed``, ``inconclusive`` (no data: neither) or
``pending`` (not yet, check again at ``wait_until``, e.g. a deploy window
that opens on Monday) with a reason. Waiting, polling and deciding what a
failure means belong to the workflow, with durable timers, so evaluators stay
short, idempotent and free of side effects.

Errors: a rule that cannot be evaluated raises ``ApplicationError``;
retryable for network trouble, non-retryable for a bad rule (a 4xx answer, a
malformed query). Either way nothing is deployed past it.
"""

from __future__ import annotations

from typing import Protocol

from prodline.contracts import Outcome, RuleResult, RuleRun


class RuleEvaluator(Protocol):
    async def evaluate(self, run: RuleRun) -> RuleResult: ...


__all__ = ["Outcome", "RuleEvaluator", "RuleResult", "RuleRun"]
