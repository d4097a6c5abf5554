"""The ``prometheus`` rule: every sample of a PromQL query meets a condition."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable

from prodline.config.rules import PrometheusRule
from prodline.contracts import Outcome, RuleResult, RuleRun

from ..context import WorkerContext
from .http_api import HttpClientEvaluator

_OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def parse_condition(condition: str) -> tuple[Callable[[float, float], bool], float]:
    match = re.fullmatch(r"\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*", condition)
    if match is None:  # the config's pattern lets only conditions through, but say so if one slips by
        raise ValueError(f"{condition!r} is not a condition like '< 0.01'")
    op, number = match.groups()
    return _OPERATORS[op], float(number)


class PrometheusEvaluator(HttpClientEvaluator[PrometheusRule]):
    spec_type = PrometheusRule

    async def evaluate(self, run: RuleRun, spec: PrometheusRule) -> RuleResult:
        ctx = WorkerContext(run.context)
        query = ctx.render(spec.query)
        url = ctx.render(spec.url).rstrip("/") + "/api/v1/query"
        body = await self.get_json(url, [("query", query)], spec.timeout, what="Prometheus")
        data = body.get("data", {})
        if data.get("resultType") == "scalar":
            samples = [("scalar", data["result"][1])]
        else:
            samples = [(_labels(s.get("metric", {})), s["value"][1]) for s in data.get("result", [])]
        values = [(label, float(value)) for label, value in samples]
        values = [(label, v) for label, v in values if not math.isnan(v)]
        if not values:
            return RuleResult(outcome=Outcome(_NO_DATA[spec.no_data]), reason=f"`{query}` returned no data")
        compare, threshold = parse_condition(spec.condition)
        bad = [f"{label} = {v:g}" for label, v in values if not compare(v, threshold)]
        if bad:
            return RuleResult(
                outcome=Outcome.failed, reason=f"`{query}` not {spec.condition.strip()}: {'; '.join(bad[:5])}"
            )
        shown = "; ".join(f"{label} = {v:g}" for label, v in values[:3])
        return RuleResult(outcome=Outcome.passed, reason=f"`{query}` {spec.condition.strip()}: {shown}")


_NO_DATA = {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}


def _labels(metric: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(metric.items())) + "}"
