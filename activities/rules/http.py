"""The ``http`` rule: an endpoint answers with the expected status and body."""

from __future__ import annotations

import asyncio
import re

import httpx

from prodline.config.rules import HttpRule

from ..context import WorkerContext
from .base import Outcome, RuleResult, RuleRun


class HttpEvaluator:
    def __init__(self, transport=None):
        self._transport = transport

    async def evaluate(self, run: RuleRun) -> RuleResult:
        spec: HttpRule = run.rule.http  # type: ignore[assignment]
        url = WorkerContext(run.context).render(spec.url)
        problem = ""
        async with httpx.AsyncClient(timeout=spec.timeout.total_seconds(), transport=self._transport) as client:
            for attempt in range(1, spec.attempts + 1):
                try:
                    response = await client.get(url)
                    if response.status_code != spec.status:
                        problem = f"GET {url} answered {response.status_code}, expected {spec.status}"
                    elif spec.body and not re.search(spec.body, response.text):
                        problem = f"GET {url}: body does not match {spec.body!r}"
                    else:
                        return RuleResult(outcome=Outcome.passed, reason=f"GET {url} answered {response.status_code}")
                except httpx.HTTPError as exc:
                    problem = f"GET {url} failed: {exc or type(exc).__name__}"
                if attempt < spec.attempts:
                    await asyncio.sleep(spec.retry_interval.total_seconds())
        return RuleResult(outcome=Outcome.failed, reason=f"{problem} (after {spec.attempts} tries)")
