"""A cancel that arrives while a rule is being evaluated."""

from __future__ import annotations

import asyncio

import pytest

from .harness import CANCEL_REQUESTED, Call, passed


def app(when: str) -> str:
    return f"""
application: shop
environments:
  - name: staging
    checks:
      - name: smoke
        command: {{run: ./smoke.sh}}
        when: [{when}]
  - name: production
"""


@pytest.mark.parametrize(
    ("when", "phases", "applied", "staging_ledger"),
    [
        # Staging's step never starts.
        ("before_deploy", {"staging": "cancelled", "production": "skipped"}, [], [("1.0.0", "cancelled")]),
        # Staging is live and recorded as such; production never starts.
        ("after_deploy", {"staging": "succeeded", "production": "skipped"}, ["deploy"], [("1.0.0", "succeeded")]),
    ],
)
async def test_a_cancel_during_a_rule_evaluation_starts_nothing_after_it(
    releases, script, request_for, when, phases, applied, staging_ledger
):
    evaluating, finish_evaluation = asyncio.Event(), asyncio.Event()

    async def evaluation_that_never_hears_of_the_cancel():
        # Rule evaluations do not heartbeat, so a cancel never reaches them: this one
        # finishes and passes as if nothing happened.
        evaluating.set()
        await finish_evaluation.wait()
        return passed()

    script.on("evaluate", "smoke", evaluation_that_never_hears_of_the_cancel, environment="staging")
    async with releases.running(request_for(app(when)), script) as run:
        await asyncio.wait_for(evaluating.wait(), 10)
        await run.handle.cancel()
        await run.saw(CANCEL_REQUESTED)
        finish_evaluation.set()
        done = await run.finish()
    assert done.state == "cancelled"
    assert done.reason == "the release was cancelled"
    assert done.phases == phases
    assert script.ran("apply") == applied
    assert script.calls[-1] == Call("evaluate", "staging", "smoke")  # nothing ran after the evaluation
    assert done.ledger("staging") == staging_ledger
    assert done.ledger("production") == []  # nothing recorded where nothing ran
