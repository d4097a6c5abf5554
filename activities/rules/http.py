"""The ``http`` rule: an endpoint answers with the expected status and body.

One request per evaluation. An endpoint that does not answer, or answers
wrong, is a *failed* check (that is the check's answer), not a rule that
cannot be evaluated; tolerating a blip is the rule's ``failures_allowed``,
re-evaluated every ``interval`` by the workflow. The ``attempts`` and
``retry_interval`` settings are accepted for existing configs but not acted
on here: a retry loop inside the evaluator was a third retry layer on top of
those two and Temporal's own retry policy.
"""

from __future__ import annotations

import re

import httpx

from prodline.config.rules import HttpRule
from prodline.contracts import Outcome, RuleResult, RuleRun

from ..context import WorkerContext
from .http_api import HttpClientEvaluator


class HttpEvaluator(HttpClientEvaluator[HttpRule]):
    spec_type = HttpRule

    async def evaluate(self, run: RuleRun, spec: HttpRule) -> RuleResult:
        url = WorkerContext(run.context).render(spec.url)
        try:
            async with self.client(spec.timeout) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return RuleResult(outcome=Outcome.failed, reason=f"GET {url} failed: {exc or type(exc).__name__}")
        if response.status_code != spec.status:
            return RuleResult(
                outcome=Outcome.failed, reason=f"GET {url} answered {response.status_code}, expected {spec.status}"
            )
        if spec.body and not re.search(spec.body, response.text):
            return RuleResult(outcome=Outcome.failed, reason=f"GET {url}: body does not match {spec.body!r}")
        return RuleResult(outcome=Outcome.passed, reason=f"GET {url} answered {response.status_code}")
