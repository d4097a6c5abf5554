"""The interface every rule kind implements, and the values that cross it.

An evaluator answers one question once: does the rule hold right now? It
returns ``passed``, ``failed`` or ``inconclusive`` with a reason. Waiting,
polling and deciding what a failure means is the workflow's job, with
durable timers, so evaluators stay short, idempotent and side-effect free.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from prodline.config.rules import Check, Precondition
from pydantic import BaseModel

from ..context import RunContext


class Outcome(StrEnum):
    passed = "passed"
    failed = "failed"
    inconclusive = "inconclusive"


class RuleRun(BaseModel):
    context: RunContext
    rule: Check | Precondition


class RuleResult(BaseModel):
    outcome: Outcome
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.passed


class RuleEvaluator(Protocol):
    async def evaluate(self, run: RuleRun) -> RuleResult: ...
