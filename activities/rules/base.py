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

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel

from prodline.config.rules import Check, Precondition

from ..context import RunContext


class Outcome(StrEnum):
    passed = "passed"
    failed = "failed"
    inconclusive = "inconclusive"
    pending = "pending"


class RuleRun(BaseModel):
    context: RunContext
    rule: Check | Precondition


class RuleResult(BaseModel):
    outcome: Outcome
    reason: str = ""
    wait_until: datetime | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.passed


class RuleEvaluator(Protocol):
    async def evaluate(self, run: RuleRun) -> RuleResult: ...
