"""The ``alerts`` rule: nothing matching is firing in Alertmanager (API v2)."""

from __future__ import annotations

from prodline.config.rules import AlertsRule
from prodline.contracts import Outcome, RuleResult, RuleRun

from ..context import WorkerContext
from .http_api import HttpClientEvaluator


class AlertsEvaluator(HttpClientEvaluator[AlertsRule]):
    spec_type = AlertsRule

    async def evaluate(self, run: RuleRun, spec: AlertsRule) -> RuleResult:
        ctx = WorkerContext(run.context)
        url = ctx.render(spec.url).rstrip("/") + "/api/v2/alerts"
        params = [("active", "true")]
        if not spec.include_silenced:
            params += [("silenced", "false"), ("inhibited", "false")]
        # The validator turned a {label: value} mapping into matchers already.
        matchers = [ctx.render(m) for m in spec.matchers]
        params += [("filter", m) for m in matchers]
        alerts = await self.get_json(url, params, spec.timeout, what="Alertmanager")
        if not alerts:
            return RuleResult(outcome=Outcome.passed, reason=f"no alerts firing for {', '.join(matchers)}")
        names = sorted({a.get("labels", {}).get("alertname", "?") for a in alerts})
        return RuleResult(
            outcome=Outcome.failed,
            reason=f"{len(alerts)} alert(s) firing for {', '.join(matchers)}: {', '.join(names)}",
        )
