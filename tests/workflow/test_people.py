"""Decisions by people: approvals, rejections, timeouts, and pauses nobody resumes."""

from __future__ import annotations

from prodline.contracts import Verdict

from .harness import failed


def approval_app(rule: str) -> str:
    """Staging, then production behind an approval rule."""
    return f"""
application: shop
environments:
  - name: staging
  - name: production
    preconditions:
      - approval: {rule}
"""


async def test_two_distinct_approvers_are_needed_and_every_refusal_is_recorded_with_its_reason(
    releases, script, request_for
):
    request = request_for(approval_app("{approvers: [alice, bob, carol], min_approvers: 2}"))
    async with releases.running(request, script) as run:
        await run.waiting_on("production", "0/2 approvals")
        assert (await run.decide("alice", comment="dashboards green")).accepted
        refusals = [
            await run.decide("alice"),
            await run.decide("mallory"),
            await run.decide("bob", environment="staging"),
        ]
        await run.waiting_on("production", "1/2 approvals (alice)")
        assert script.ran("apply", "production") == []  # one approval is not enough
        assert (await run.decide("bob")).accepted
        done = await run.finish()
    assert [r.accepted for r in refusals] == [False, False, False]
    assert done.state == "succeeded", done.reason
    assert done.decisions == [
        ("alice", True, ""),
        ("alice", False, "alice already approved; 2 distinct approvers are needed"),
        ("mallory", False, "mallory may not decide for production (approvers: alice, bob, carol)"),
        ("bob", False, "the release is waiting in production, not staging"),
        ("bob", True, ""),
    ]
    assert done.status.decisions[0].comment == "dashboards green"
    assert "precondition approval: approved by alice, bob" in done.events
    assert script.ran("apply", "production") == ["deploy"]


async def test_the_initiator_may_not_approve_when_the_rule_forbids_it(releases, script, request_for):
    request = request_for(approval_app("{forbid_initiator: true}"), initiator="dana")
    async with releases.running(request, script) as run:
        await run.waiting_on("production", "0/1 approvals")
        refused = await run.decide("dana")
        await run.waiting_on("production", "0/1 approvals")
        assert script.ran("apply", "production") == []
        await run.decide("erin")
        done = await run.finish()
    assert refused.reason == "dana started this release and may not approve it"
    assert done.state == "succeeded", done.reason
    assert done.decisions == [("dana", False, "dana started this release and may not approve it"), ("erin", True, "")]


async def test_a_rejected_release_shows_and_records_rejected_not_failed(releases, script, request_for):
    request = request_for(approval_app("{approvers: [alice]}"))
    async with releases.running(request, script) as run:
        await run.waiting_on("production", "approvals")
        assert (await run.decide("alice", Verdict.reject, comment="error budget spent")).accepted
        done = await run.finish()
    assert done.state == "rejected"
    assert done.reason == "production: rejected by alice: error budget spent"
    assert done.phases == {"staging": "succeeded", "production": "rejected"}
    assert done.steps("production") == {"deploy": "pending"}  # nothing ran there
    assert script.ran("apply") == ["deploy"]  # staging only
    assert done.ledger("staging") == [("1.0.0", "succeeded")]
    assert done.ledger("production") == [("1.0.0", "rejected")]
    assert done.ledgers["production"][0].reason == done.reason


async def test_an_approval_nobody_gives_in_time_shows_and_records_timed_out(releases, script, request_for):
    request = request_for(approval_app("{approvers: [alice], timeout: 1s}"))
    done = await releases.run(request, script)
    assert done.state == "timed_out"
    assert done.reason == "production: precondition approval: 0/1 approvals; approvers: alice: timed out after 1s"
    assert done.phases == {"staging": "succeeded", "production": "timed_out"}
    assert script.ran("apply") == ["deploy"]
    assert done.ledger("production") == [("1.0.0", "timed_out")]
    assert done.decisions == []


PAUSED = """
application: shop
environments:
  - name: staging
    preconditions:
      - approval: {approvers: [alice]}
    checks:
      - name: qa-signoff
        command: {run: ./qa.sh}
        when: [before_approval]
        on_failure: pause
        timeout: 1s  # how long people have to resume or reject
  - name: production
"""


async def test_a_pause_nobody_resumes_ends_the_release_timed_out(releases, script, request_for):
    script.on("evaluate", "qa-signoff", failed("no sign-off yet"))
    done = await releases.run(request_for(PAUSED), script)
    assert done.state == "timed_out"
    assert done.reason == (
        "staging: paused on check qa-signoff (before approval): 0/1 approvals; approvers: alice: timed out after 1s"
    )
    assert any(e.startswith("paused: check qa-signoff (before approval) failed: no sign-off yet") for e in done.events)
    assert script.ran("apply") == []
    assert done.phases == {"staging": "timed_out", "production": "skipped"}
    assert done.ledger("staging") == [("1.0.0", "timed_out")] and done.ledger("production") == []
