"""The ``freeze`` rule: no scheduled or manual freeze holds the environment.

Scheduled freezes come with the rule (the resolver copies the environment's from the
registered revision); whether one is in force is pure arithmetic on the clock. Manual
freezes (``prodline freeze``) are kept by the application's workflow and read with its
``freezes`` query; it answers with every freeze it keeps, and this compares their ``until``
with the evaluator's clock.

A scheduled freeze says when it ends (``wait_until``: the release sleeps durably until then);
a manual one can be lifted at any moment, so the release re-evaluates at the rule's interval.
When the application workflow cannot answer, the evaluation fails with a retryable error:
not knowing whether production is frozen is no reason to deploy into it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from prodline.config.freezes import FREEZES_QUERY, ManualFreeze, freeze_in_force
from prodline.config.rules import FreezeRule
from prodline.contracts import Outcome, RuleResult, RuleRun, application_id

from .base import Clock, RuleEvaluator, utc_now

# How long the application workflow has to answer (a worker that has not cached it replays it first).
QUERY_TIMEOUT = timedelta(seconds=10)


async def read_manual_freezes(client: Client, application: str) -> list[ManualFreeze]:
    """Every manual freeze the application's workflow keeps (expired ones too); [] when it has none."""
    handle = client.get_workflow_handle(application_id(application))
    try:
        return await handle.query(FREEZES_QUERY, result_type=list[ManualFreeze], rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "namespace" not in exc.message.lower():
            return []  # never registered: nobody could have frozen it
        raise ApplicationError(
            f"the workflow of application {application} ({application_id(application)}) did not answer "
            f"whether it is frozen ({exc.status.name}: {exc.message}); is a control worker running?"
        ) from None
    except WorkflowQueryFailedError as exc:
        raise ApplicationError(f"application {application} could not say whether it is frozen: {exc}") from None


class FreezeEvaluator(RuleEvaluator[FreezeRule]):
    spec_type = FreezeRule

    def __init__(self, client: Client, clock: Clock = utc_now):
        self._client = client
        self._clock = clock

    async def evaluate(self, run: RuleRun, spec: FreezeRule) -> RuleResult:
        environment = spec.environment
        kept = await read_manual_freezes(self._client, spec.application)
        frozen = freeze_in_force(environment, kept, spec.scheduled, self._clock())
        if frozen is not None:
            # A manual freeze has no wait_until: `prodline unfreeze` may lift it any moment; the interval re-checks.
            reason, ends = frozen
            return RuleResult(outcome=Outcome.pending, reason=reason, wait_until=ends)
        return RuleResult(outcome=Outcome.passed, reason=f"{environment} is not frozen")
