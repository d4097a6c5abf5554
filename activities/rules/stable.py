"""The ``stable`` rule: this version is live in an earlier environment, long enough.

"Live" is read from the deployment ledger (what the engine recorded), not
guessed: the latest *succeeded* deployment there is this version, and its
after-deploy checks passed (a deployment is only recorded as succeeded
once they have).
"""

from __future__ import annotations

from temporalio.client import Client

from prodline.config.durations import format_duration
from prodline.config.rules import StableRule
from prodline.contracts import DeploymentState, Outcome, RuleResult, RuleRun

from ..ledger import read_ledger
from .base import Clock, RuleEvaluator, utc_now


class StableEvaluator(RuleEvaluator[StableRule]):
    spec_type = StableRule

    def __init__(self, client: Client, clock: Clock = utc_now):
        self._client = client
        self._clock = clock

    async def evaluate(self, run: RuleRun, spec: StableRule) -> RuleResult:
        ctx = run.context
        records = await read_ledger(self._client, ctx.application, ctx.service, spec.environment)
        live = next((r for r in reversed(records) if r.state is DeploymentState.succeeded), None)
        if live is None or live.version != ctx.version:
            now_live = f"{live.version} is live there" if live else "nothing was deployed there yet"
            return RuleResult(
                outcome=Outcome.failed, reason=f"{ctx.version} is not live in {spec.environment} ({now_live})"
            )
        stable_at = live.finished_at + spec.soak
        if self._clock() < stable_at:
            return RuleResult(
                outcome=Outcome.pending,
                reason=f"{ctx.version} live in {spec.environment} since {live.finished_at:%H:%M:%S}Z; "
                f"soaking {format_duration(spec.soak)} until {stable_at:%H:%M:%S}Z",
                wait_until=stable_at,
            )
        return RuleResult(
            outcome=Outcome.passed,
            reason=f"{ctx.version} stable in {spec.environment} since {live.finished_at:%Y-%m-%d %H:%M:%S}Z",
        )
