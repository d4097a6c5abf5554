"""Signed decisions and starts, judged by the release workflow itself, as attacks.

Each test signs real SSH signatures (ed25519 keys made for the test, signed in-process as
`prodline approve --key` does) and sends them as the Update the CLI sends. What counts is
decided inside the workflow against the keys of the plan's application revision; every
refusal is answered, and recorded in the release's status with its reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from prodline.contracts import ReleaseStatus, StepResult, Verdict
from prodline.identity.documents import DecisionDocument, Signed, StartDocument
from prodline.identity.signing import generate, sign

from .conftest import ONE_STEP_SERVICE
from .harness import failed, stale


@dataclass(frozen=True)
class Person:
    name: str
    key: Path
    public: str


@pytest.fixture
def people(tmp_path) -> dict[str, Person]:
    made = {}
    for name in ("alice", "bob", "mallory"):
        key = tmp_path / "keys" / name
        key.parent.mkdir(exist_ok=True)
        made[name] = Person(name, key, generate(key, f"{name}@laptop"))
    return made


def signed_app(people: dict[str, Person], rule: str, *, starts: bool = False, enrolled=("alice", "bob")) -> str:
    """Staging (names as given), then production taking signed decisions only."""
    listed = "\n".join(f"  {name}: {people[name].public}" for name in enrolled)
    return f"""
application: shop
signed_starts: {"true" if starts else "false"}
people:
{listed}
environments:
  - name: staging
  - name: production
    verify: ssh
    preconditions:
      - approval: {rule}
"""


def decision(
    status: ReleaseStatus, person: Person, verdict: Verdict = Verdict.approve, *, now: datetime | None = None, **over
) -> Signed:
    """What `prodline approve --key` signs, from the status it showed (``over`` forges fields)."""
    fields: dict[str, Any] = {
        **status.decision_subject(over.pop("environment", "production")),
        "verdict": verdict.value,
    }
    fields.update(over)
    valid_for = fields.pop("valid_for", timedelta(minutes=15))
    document = DecisionDocument.issue(now=now or datetime.now(UTC), valid_for=valid_for, **fields)
    return Signed(document=document.text(), signature=sign(document.text(), person.key))


async def test_a_quorum_of_two_distinct_signed_keys_deploys_and_records_who_signed(
    releases, script, request_for, people
):
    request = request_for(signed_app(people, "{approvers: [alice, bob], min_approvers: 2}"))
    async with releases.running(request, script) as run:
        status = await run.waiting_on("production", "0/2 approvals")
        # The asserted name is ignored: the key's owner decided.
        first = await run.decide("somebody", signed=decision(status, people["alice"]))
        assert (first.accepted, first.by, first.progress) == (
            True,
            "alice",
            "precondition approval: 1/2 approvals (alice); approvers: alice, bob",
        )
        assert first.verified.startswith("ssh SHA256:")
        assert script.ran("apply", "production") == []
        second = await run.decide("bob", signed=decision(status, people["bob"]))
        assert second.accepted, second.reason
        done = await run.finish()
    assert done.state == "succeeded", done.reason
    assert [d.verified != "" for d in done.status.decisions] == [True, True]
    assert first.verified != second.verified  # two keys, two fingerprints
    assert any("alice approved [ssh SHA256:" in e for e in done.events)


async def test_every_forged_or_misdirected_signature_is_refused_with_its_reason_and_recorded(
    releases, script, request_for, people
):
    request = request_for(signed_app(people, "{approvers: [alice, bob], min_approvers: 2}"))
    alice, bob, mallory = people["alice"], people["bob"], people["mallory"]
    async with releases.running(request, script) as run:
        status = await run.waiting_on("production", "0/2 approvals")
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        reused = decision(status, bob, comment="")
        attempts = {
            "unsigned": await run.decide("alice"),
            "unknown key": await run.decide("mallory", signed=decision(status, mallory)),
            "alice's name, bob's key": await run.decide("alice", signed=decision(status, bob, by="alice")),
            "another release": await run.decide("alice", signed=decision(status, alice, release="shop.checkout@9.9.9")),
            "another run": await run.decide("alice", signed=decision(status, alice, run="0f1e2d3c-run")),
            "another environment": await run.decide("alice", signed=decision(status, alice, environment="staging")),
            "another plan": await run.decide(
                "alice", signed=decision(status, alice, plans={"deploy": "sha256:" + "0" * 64})
            ),
            "expired": await run.decide(
                "alice", signed=decision(status, alice, now=an_hour_ago, valid_for=timedelta(minutes=10))
            ),
            "verdict changed after signing": await run.decide("alice", Verdict.reject, signed=decision(status, alice)),
        }
        assert script.ran("apply", "production") == []
        assert (await run.decide("bob", signed=reused)).accepted
        replayed = await run.decide("bob", signed=reused)
        # ed25519 is deterministic: the same document signed in the same second is the same signature.
        ship = decision(status, alice, comment="ship it")
        assert (await run.decide("alice", comment="ship it", signed=ship)).accepted
        done = await run.finish()
    reasons = {what: record.reason for what, record in attempts.items()}
    # Unproven names are marked as such; a signature that held names its signer.
    assert attempts["unsigned"].by == "alice (claimed)" and attempts["unknown key"].by == "mallory (claimed)"
    assert attempts["another run"].by == "alice" and attempts["another run"].verified.startswith("ssh SHA256:")
    assert not any(record.accepted for record in attempts.values())
    assert "production takes signed decisions only" in reasons["unsigned"]
    assert "is not enrolled" in reasons["unknown key"]
    assert "bob's key, not alice's" in reasons["alice's name, bob's key"]
    assert "for release shop.checkout@9.9.9" in reasons["another release"]
    assert "for run 0f1e2d3c-run" in reasons["another run"]
    assert "for staging; the release is waiting in production" in reasons["another environment"]
    assert "planned again since" in reasons["another plan"]
    assert "expired at" in reasons["expired"]
    assert "not the one signed" in reasons["verdict changed after signing"]
    assert not replayed.accepted and "already presented" in replayed.reason
    assert done.state == "succeeded", done.reason
    recorded = [(d.accepted, d.reason) for d in done.status.decisions]
    assert recorded[: len(attempts)] == [(False, reason) for reason in reasons.values()]


async def test_a_signature_is_good_for_one_decision_only(releases, script, request_for, people):
    request = request_for(signed_app(people, "{approvers: [alice, bob], min_approvers: 2}"))
    async with releases.running(request, script) as run:
        status = await run.waiting_on("production", "0/2 approvals")
        signed = decision(status, people["alice"])
        assert (await run.decide("alice", signed=signed)).accepted
        again = await run.decide("alice", signed=signed)
        assert not again.accepted and "already presented" in again.reason
        await run.waiting_on("production", "1/2 approvals (alice)")


async def test_an_approval_signed_for_plan_a_does_not_count_after_a_replan_to_plan_b(
    releases, script, request_for, people
):
    script.on(
        "plan",
        "deploy",
        StepResult(summary="1 to add", digest="a" * 64),
        StepResult(summary="1 to change", digest="b" * 64),
        environment="production",
    )
    script.on("apply", "deploy", stale(), StepResult(summary="applied"), environment="production")
    planned_service = ONE_STEP_SERVICE.replace(
        "command: {apply: ./deploy.sh}", "terraform: {dir: infra, on_stale_plan: replan}"
    )
    request = request_for(signed_app(people, "{approvers: [alice, bob]}"), planned_service)
    async with releases.running(request, script) as run:
        plan_a = await run.waiting_on("production", "0/1 approvals")
        assert plan_a.environment("production").steps[0].plan_digest == "sha256:" + "a" * 64
        assert (await run.decide("alice", signed=decision(plan_a, people["alice"]))).accepted
        # The apply finds plan A stale: planned again (B), and approved again.
        plan_b = await run.until(
            lambda s: (
                s.environment("production").steps[0].plan_digest.endswith("b" * 64)
                and "0/1 approvals" in s.environment("production").waiting_on
            ),
            "the re-plan to wait for approval again",
        )
        # A fresh signature for the gate open now, but over the plans alice saw before the re-plan.
        gate_now = plan_b.environment("production").gate
        old_view = await run.decide(
            "alice", comment="still fine", signed=decision(plan_a, people["alice"], comment="still fine", gate=gate_now)
        )
        assert not old_view.accepted and "planned again since" in old_view.reason
        assert script.count("apply", "deploy", "production") == 1
        assert (await run.decide("bob", signed=decision(plan_b, people["bob"]))).accepted
        done = await run.finish()
    assert done.state == "succeeded", done.reason
    assert script.count("apply", "deploy", "production") == 2


def signed_start(planned, person: Person, **over) -> Signed:
    r = planned.request
    fields: dict[str, Any] = dict(
        release=r.release_id,
        application=r.application,
        service=r.service,
        version=r.version,
        service_file=r.service_file,
        parameters=r.parameters,
    )
    fields.update(over)
    document = StartDocument.issue(now=datetime.now(UTC), **fields)
    return Signed(document=document.text(), signature=sign(document.text(), person.key))


def with_start(planned, signed: Signed | None, initiator: str):
    request = planned.request.model_copy(update={"signed": signed, "initiator": initiator})
    return type(planned)(request, planned.plan)


async def test_a_forged_initiator_cannot_approve_where_the_initiator_is_banned(releases, script, request_for, people):
    planned = request_for(signed_app(people, "{approvers: [alice, bob], forbid_initiator: true}", starts=True))
    # alice signs the start but claims to be someone else on the command line.
    forged = with_start(planned, signed_start(planned, people["alice"]), initiator="bob")
    async with releases.running(forged, script) as run:
        status = await run.waiting_on("production", "0/1 approvals")
        assert (status.initiator, status.initiator_verified[:10]) == ("alice", "ssh SHA256")
        own = await run.decide("alice", signed=decision(status, people["alice"]))
        assert not own.accepted and own.reason == "alice started this release and may not approve it"
        assert (await run.decide("bob", signed=decision(status, people["bob"]))).accepted
        done = await run.finish()
    assert done.state == "succeeded", done.reason


async def test_where_starts_must_be_signed_an_unsigned_or_forged_start_is_refused(
    releases, script, request_for, people
):
    planned = request_for(signed_app(people, "{approvers: [alice, bob], forbid_initiator: true}", starts=True))
    unsigned = await releases.run(with_start(planned, None, "bob"), script)
    assert unsigned.state == "failed"
    assert "requires signed starts and this one is not signed" in unsigned.reason
    assert script.ran("apply") == []

    other = request_for(signed_app(people, "{approvers: [alice, bob]}", starts=True), version="1.0.1")
    someone_else = await releases.run(with_start(other, signed_start(other, people["alice"], by="bob"), "bob"), script)
    assert someone_else.state == "failed" and "alice's key, not bob's" in someone_else.reason

    third = request_for(signed_app(people, "{approvers: [alice, bob]}", starts=True), version="1.0.2")
    for_another_version = signed_start(third, people["alice"], version="1.0.1")
    replayed = await releases.run(with_start(third, for_another_version, "alice"), script)
    assert replayed.state == "failed" and "signed for version '1.0.1'" in replayed.reason
    assert script.ran("apply") == []


async def test_decisions_are_updates_in_history_refused_ones_included(releases, script, request_for, people):
    request = request_for(signed_app(people, "{approvers: [alice]}"))
    async with releases.running(request, script) as run:
        status = await run.waiting_on("production", "0/1 approvals")
        await run.decide("alice")  # unsigned: refused
        await run.decide("alice", signed=decision(status, people["alice"]))
        await run.finish()
        events = (await run.handle.fetch_history()).events
    accepted = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED]
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert (len(accepted), len(completed)) == (2, 2)
    assert set(signals) == {"turn"}  # the ledgers' answers about lanes; no decision came as a signal
    answers = [
        e.workflow_execution_update_completed_event_attributes.outcome.success.payloads[0].data for e in completed
    ]
    assert b'"accepted":false' in answers[0] and b"takes signed decisions only" in answers[0]
    assert b'"accepted":true' in answers[1] and b'"verified":"ssh SHA256:' in answers[1]


# Production's after-deploy check that pauses the release when it fails: a second people gate.
PAUSING_SMOKE_CHECK = """\
    checks:
      - name: smoke
        command: {run: ./smoke.sh}
        when: [after_deploy]
        on_failure: pause
"""


def rewrapped(signed: Signed) -> Signed:
    """The same signature, armored differently (64-column lines, CRLF): other bytes, still valid."""
    lines = signed.signature.strip().splitlines()
    body = "".join(lines[1:-1])
    wrapped = [body[i : i + 64] for i in range(0, len(body), 64)]
    return Signed(document=signed.document, signature="\r\n".join([lines[0], *wrapped, lines[-1]]) + "\r\n")


async def test_an_approval_counts_at_the_one_gate_it_names_not_at_a_later_pause(releases, script, request_for, people):
    app = signed_app(people, "{approvers: [alice, bob]}") + PAUSING_SMOKE_CHECK
    script.on("evaluate", "smoke", failed("error rate 5%"))
    alice = people["alice"]
    async with releases.running(request_for(app), script) as run:
        approval = await run.waiting_on("production", "0/1 approvals")
        assert approval.environment("production").gate == "1: precondition approval"
        signed = decision(approval, alice)
        assert (await run.decide("alice", signed=signed)).accepted
        paused = await run.waiting_on("production", "paused on check smoke")
        assert paused.environment("production").gate == "2: paused on check smoke (after deploy)"
        # Someone copies alice's approval from history to resume past the failing check.
        copied = await run.decide("alice", signed=rewrapped(signed))
        # Or alice's own client signs what it saw before (gate 1) and it arrives late.
        late = await run.decide("alice", comment="late", signed=decision(approval, alice, comment="late"))
        assert script.count("evaluate", "smoke") == 1
        resumed = await run.decide(
            "alice", comment="known issue", signed=decision(paused, alice, comment="known issue")
        )
        done = await run.finish()
    assert not copied.accepted and "already presented" in copied.reason
    assert not late.accepted and "the signature is for gate 1: precondition approval" in late.reason
    assert resumed.accepted, resumed.reason
    assert done.state == "succeeded", done.reason


async def test_a_key_the_verifier_no_longer_accepts_stops_the_release_instead_of_retrying_forever(
    releases, script, request_for, people
):
    planned = request_for(signed_app(people, "{approvers: [alice, bob]}"))
    stale = planned.plan.model_copy(update={"people": {"alice": ["ssh-dss AAAAB3NzaC1kc3MAAACBAP"]}})
    done = await releases.run(type(planned)(planned.request, stale), script)
    assert done.state == "failed"
    assert done.reason.startswith("the release cannot start: people: alice[0]:")
    assert script.ran("apply") == []


async def test_a_release_reset_after_a_signed_approval_keeps_it_and_takes_the_next_one(
    releases, script, request_for, people
):
    """An operator resets a paused release (Temporal's reset: a new run replaying the old one's
    events). The copied approval must judge the same on replay, and later ones name the same run."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    app = signed_app(people, "{approvers: [alice, bob]}") + PAUSING_SMOKE_CHECK
    script.on("evaluate", "smoke", failed("error rate 5%"))
    async with releases.running(request_for(app), script) as run:
        approval = await run.waiting_on("production", "0/1 approvals")
        assert (await run.decide("alice", signed=decision(approval, people["alice"]))).accepted
        await run.waiting_on("production", "paused on check smoke")
        events = (await run.handle.fetch_history()).events
        last_task = max(e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        reset = await run.client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=run.client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=run.handle.id),
                reason="operator retries the release",
                workflow_task_finish_event_id=last_task,
                request_id=uuid.uuid4().hex,
            )
        )
        run.handle = run.client.get_workflow_handle(run.handle.id)  # the new run
        paused = await run.waiting_on("production", "paused on check smoke")
        assert paused.run_id == reset.run_id and paused.original_run_id == approval.original_run_id
        resumed = await run.decide("bob", comment="known", signed=decision(paused, people["bob"], comment="known"))
        assert resumed.accepted, resumed.reason
        done = await run.finish()
    assert done.state == "succeeded", done.reason
    assert [d.accepted for d in done.status.decisions] == [True, True]


async def test_a_signed_start_sent_under_another_workflow_id_starts_nothing(releases, script, request_for, people):
    """Someone copies a valid signed start of 1.0.0 from history and starts it as a workflow
    named for another version: it would run 1.0.0 beside its own release, or again after it."""
    planned = request_for(signed_app(people, "{approvers: [alice, bob]}", starts=True))
    copied = with_start(planned, signed_start(planned, people["alice"]), "alice")
    forged_id = planned.request.release_id.replace("@1.0.0", "@9.9.8")
    async with releases.running(copied, script, workflow_id=forged_id) as run:
        done = await run.finish()
    assert done.state == "failed"
    assert done.reason == (
        f"the release cannot start: this workflow's ID is {forged_id}, but its input releases "
        f"{planned.request.release_id}; start it with `prodline release start`"
    )
    assert script.ran("apply") == [] and script.ran("plan") == []


def test_decisions_and_signatures_are_bounded_so_a_flood_cannot_fill_a_history():
    from pydantic import ValidationError

    from prodline.contracts import Decision

    fits = Decision(request_id="r", environment="production", by="alice", verdict=Verdict.approve, comment="x" * 2000)
    assert len(fits.comment) == 2000
    with pytest.raises(ValidationError):
        Decision(request_id="r", environment="production", by="alice", verdict=Verdict.approve, comment="x" * 2001)
    with pytest.raises(ValidationError):
        Signed(document="{}", signature="x" * (8 * 1024 + 1))
    with pytest.raises(ValidationError):
        Signed(document="x" * (16 * 1024 + 1), signature="")
