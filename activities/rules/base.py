"""The interface every rule kind implements, and the values that cross it.

An evaluator answers one question once: does the rule hold right now? It
returns ``passed``, ``failed``, ``inconclusive`` (no data: neither) or
``pending`` (not yet, check again at ``wait_until``, e.g. a deploy window
that opens on Monday) with a reason. Waiting, polling, retrying and deciding
what a failure means belong to the workflow (durable timers,
``failures_allowed``) and to Temporal (the activity's retry policy), so
evaluators stay short, idempotent, free of side effects and free of loops.

Errors: a rule that cannot be evaluated raises ``ApplicationError``;
retryable for network trouble, non-retryable for a bad rule (a 4xx answer, a
malformed query). Either way nothing is deployed past it.

What an evaluator needs from the world (a Temporal client, an HTTP transport,
a clock) is given to its constructor by ``RuleActivities``, so tests inject
fakes the same way the worker injects the real ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar, Generic, TypeVar

from prodline.config.rules import RuleSpec
from prodline.contracts import RuleResult, RuleRun

SpecT = TypeVar("SpecT", bound=RuleSpec)

# What "now" is to evaluators that compare against it (windows, soak times): aware UTC.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RuleEvaluator(ABC, Generic[SpecT]):
    """One rule kind: evaluates its config model (``spec_type``) once, for one release."""

    spec_type: ClassVar[type[RuleSpec]]

    @abstractmethod
    async def evaluate(self, run: RuleRun, spec: SpecT) -> RuleResult: ...


__all__ = ["Clock", "RuleEvaluator", "utc_now"]
