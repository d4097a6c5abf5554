"""Canaries driven by the environment's rules, pause by pause, and steps that wait for health.

The workflow is the real one; the wait, promote and abort activities answer from a script
(the runners themselves are tested against the fake API server in tests/test_rollout_step.py).
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from prodline.contracts import UNHEALTHY, StepProgress, StepResult

from .harness import failed, passed

APP = """
application: shop
environments:
  - name: production
    preconditions:
      - approval: {approvers: [alice]}
    checks:
      - name: smoke
        command: {run: ./smoke.sh}
        when: [after_deploy]
      - name: errors
        command: {run: ./errors.sh}
        when: [after_deploy]
        interval: 1s
"""

CANARY = """
service: checkout
application: shop
steps:
  - name: web
    rollout:
      manifests: [k8s]
      pauses:
        - checks: [smoke]
        - checks: [errors]
          for: 2s
        - approval: true
"""

KUBERNETES = """
service: checkout
application: shop
steps:
  - name: web
    kubernetes: {manifests: [k8s]}
"""


def paused(pause: int, step_index: int, pod_hash: str = "5d8f7c9b6a") -> StepProgress:
    return StepProgress(paused=True, pause=pause, step_index=step_index, steps=6, pod_hash=pod_hash, message="Paused")


HEALTHY = StepProgress(done=True, message="Healthy")


def canary_calls(script) -> list[str]:
    """The release's calls about the canary and its rules, in order."""
    return [f"{c.action} {c.name}" for c in script.calls if c.action != "plan"]


async def approve_when_asked(running, what: str = "precondition approval") -> None:
    await running.waiting_on("production", what)
    assert (await running.decide("alice")).accepted


async def test_a_canary_is_promoted_pause_by_pause_as_its_rules_pass(releases, script, request_for):
    script.on("wait", "web", paused(1, 1), paused(2, 3), paused(3, 5), HEALTHY)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await approve_when_asked(running, "approval at canary pause 3")
        done = await running.finish()
    assert done.state == "succeeded", done.reason
    calls = canary_calls(script)
    # Each pause ran exactly the rules the step names for it, then was promoted; the
    # environment's after-deploy checks ran once more at the end, on the finished rollout.
    assert calls[: calls.index("wait web", 2)] == ["apply web", "wait web", "evaluate smoke", "promote web"]
    pause_2 = calls[calls.index("promote web") + 2 : calls.index("promote web", calls.index("promote web") + 1)]
    assert set(pause_2) == {"evaluate errors"} and len(pause_2) >= 2  # watched for 2s at a 1s interval
    assert calls[-4:] == ["promote web", "wait web", "evaluate smoke", "evaluate errors"]
    # Promote named the pause it was for, so the runner refuses to promote past a later step.
    assert [(a.at.pause, a.at.step_index, a.at.pod_hash) for a in script.actions if a.at] == [
        (1, 1, "5d8f7c9b6a"),
        (2, 3, "5d8f7c9b6a"),
        (3, 5, "5d8f7c9b6a"),
    ]
    assert "web: canary healthy and fully promoted" in done.events
    assert done.steps("production") == {"web": "succeeded"}


async def test_a_check_failing_at_a_pause_aborts_the_canary_and_fails_the_release(releases, script, request_for):
    script.on("wait", "web", paused(1, 1), paused(2, 3), HEALTHY)
    script.on("evaluate", "errors", failed("error rate 7%"))
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        done = await running.finish()
    assert done.state == "failed"
    assert done.reason == "production: check errors at canary pause 2 (step 4 of 6) failed: error rate 7%"
    assert canary_calls(script)[-2:] == ["evaluate errors", "abort web"]  # aborted, never promoted past pause 2
    assert script.count("promote", "web") == 1
    assert done.steps("production") == {"web": "failed"}
    assert any("canary aborted, traffic back on the stable version" in e for e in done.events)
    assert done.ledger("production") == [("1.0.0", "failed")]


async def test_a_release_rejected_at_a_pause_aborts_its_canary(releases, script, request_for):
    script.on("wait", "web", paused(1, 1), paused(2, 3), paused(3, 5), HEALTHY)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await running.waiting_on("production", "approval at canary pause 3")
        await running.decide("alice", verdict="reject", comment="latency")
        done = await running.finish()
    assert done.state == "rejected"
    assert script.ran("abort") == ["web"] and script.count("promote", "web") == 2


async def test_a_release_cancelled_at_a_pause_aborts_its_canary(releases, script, request_for):
    script.on("wait", "web", paused(1, 1), paused(2, 3), paused(3, 5), HEALTHY)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await running.waiting_on("production", "approval at canary pause 3")
        await running.handle.cancel()
        done = await running.finish()
    assert done.state == "cancelled"
    assert script.ran("abort") == ["web"]
    assert done.steps("production") == {"web": "cancelled"}


async def test_an_operator_promotes_past_a_pauses_checks_but_never_past_its_approval(releases, script, request_for):
    script.on("wait", "web", paused(1, 1), paused(2, 3), paused(3, 5), HEALTHY)
    # Pause 2 watches its check for an hour: an operator who has seen enough promotes.
    service = CANARY.replace("for: 2s", "for: 1h")
    async with releases.running(request_for(APP, service), script) as running:
        await approve_when_asked(running)
        await running.until(lambda s: any("watching errors for 1h" in e.message for e in s.events), "the watch")
        # --full would skip pause 3's approval as well: people are never skipped.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await running.steer("promote_full")
        assert "pause 3 waits for production's approval, which a promote would skip" in str(refused.value.cause)
        answer = await running.steer("promote", by="ops", reason="metrics reviewed")
        await running.waiting_on("production", "approval at canary pause 3")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await running.steer("promote", by="ops")
        assert "approve it with `prodline approve`" in str(refused.value.cause)
        assert (await running.decide("alice")).accepted
        done = await running.finish()
    assert answer == "promoted past pause 2"
    assert done.state == "succeeded", done.reason
    assert [a.at.pause for a in script.actions if a.at] == [1, 2, 3]
    assert "ops: promote (metrics reviewed); the pause's remaining rules skipped" in done.events
    assert "ops asks to promote (metrics reviewed)" in done.events  # recorded as the Update arrived


async def test_promote_is_refused_while_a_canary_step_runs_and_abort_is_not(releases, script, request_for):
    entered = asyncio.Event()

    async def progressing() -> StepProgress:
        entered.set()
        while True:  # a canary step that takes long: heartbeats, so the cancel reaches it
            activity.heartbeat("setWeight 20")
            await asyncio.sleep(0.05)

    script.on("wait", "web", progressing)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await asyncio.wait_for(entered.wait(), 10)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await running.steer("promote")
        assert "a step still running is never skipped" in str(refused.value.cause)
        assert await running.steer("abort", by="ops", reason="pager") == "aborting the canary; the release fails"
        done = await running.finish()
    assert done.state == "failed"
    assert done.reason == "production: canary web aborted by ops (pager)"
    assert script.ran("abort") == ["web"] and script.ran("promote") == []


async def test_steering_a_release_without_a_canary_in_progress_is_refused(releases, script, request_for):
    async with releases.running(request_for(APP, CANARY), script) as running:
        await running.waiting_on("production", "precondition approval")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await running.steer("abort")
        assert "the release has no canary in progress" in str(refused.value.cause)
        assert (await running.decide("alice")).accepted  # still waiting as before


async def test_a_kubernetes_step_waits_for_health_and_records_what_it_applied(releases, script, request_for):
    applied = StepResult(summary="applied 3 objects", applied_key="k", applied_digest="sha256:" + "a" * 64)
    script.on("apply", "web", applied)
    script.on("wait", "web", StepProgress(done=True, message='deployment "web" successfully rolled out'))
    async with releases.running(request_for(APP, KUBERNETES), script) as running:
        await approve_when_asked(running)
        done = await running.finish()
    assert done.state == "succeeded", done.reason
    assert canary_calls(script)[:2] == ["apply web", "wait web"]
    web = done.status.environment("production").steps[0]
    assert web.summary == 'applied 3 objects; deployment "web" successfully rolled out'
    record = done.ledgers["production"][-1]
    assert record.applied == {"web": "sha256:" + "a" * 64}


async def test_an_unhealthy_rollout_fails_the_release_with_the_controllers_message(releases, script, request_for):
    deadline = 'deployment "web" exceeded its progress deadline'
    script.on("wait", "web", ApplicationError(deadline, type=UNHEALTHY, non_retryable=True))
    async with releases.running(request_for(APP, KUBERNETES), script) as running:
        await approve_when_asked(running)
        done = await running.finish()
    assert done.state == "failed"
    assert done.reason == f"production: step web failed: {deadline}"
    assert script.count("wait", "web") == 1  # not retried: it cannot get better by waiting
    assert script.count("evaluate", "smoke") == 0
    assert done.steps("production") == {"web": "failed"}


async def test_an_abort_during_a_pause_check_stops_the_canary_before_any_promote(releases, script, request_for):
    started = asyncio.Event()

    async def slow_check():  # an evaluation does not heartbeat: the cancel cannot reach it
        started.set()
        await asyncio.sleep(2)
        return passed()

    script.on("wait", "web", paused(1, 1), HEALTHY)
    script.on("evaluate", "smoke", slow_check)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await asyncio.wait_for(started.wait(), 10)
        answer = await asyncio.wait_for(running.steer("abort", by="ops", reason="pager"), 10)
        done = await running.finish()
    assert answer == "aborting the canary; the release fails"
    assert done.reason == "production: canary web aborted by ops (pager)"
    # The check finished after the command; the pause was not promoted on its result.
    assert script.ran("promote") == [] and script.ran("abort") == ["web"]


async def test_a_canary_is_aborted_when_its_apply_is_cancelled(releases, script, request_for):
    entered = asyncio.Event()

    async def applying() -> StepResult:
        entered.set()
        while True:  # sending objects; heartbeats, so the cancel reaches it
            activity.heartbeat("applied 3/30")
            await asyncio.sleep(0.05)

    script.on("apply", "web", applying)
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        await asyncio.wait_for(entered.wait(), 10)
        await running.handle.cancel()
        done = await running.finish()
    assert done.state == "cancelled"
    # The Rollout may have been sent: it is aborted, found from the approved plan.
    (abort,) = script.actions
    assert script.ran("abort") == ["web"] and abort.run.applied is None and abort.run.plan is not None


async def test_a_canary_whose_apply_fails_is_aborted_and_a_failed_abort_is_in_the_reason(releases, script, request_for):
    # An apply that fails after sending some objects: aborted too; an abort that fails is said.
    script.on("apply", "web", ApplicationError("Rollout web: forbidden", type="ConfigurationError", non_retryable=True))
    script.on("abort", "web", ApplicationError("connection refused", type="ConfigurationError", non_retryable=True))
    async with releases.running(request_for(APP, CANARY), script) as running:
        await approve_when_asked(running)
        done = await running.finish()
    assert done.state == "failed"
    assert done.reason == (
        "production: step web failed: Rollout web: forbidden; "
        "THE CANARY OF web COULD NOT BE ABORTED (production: step web failed: connection refused): abort it by hand"
    )


async def test_an_abort_sent_while_a_promote_is_carried_out_waits_for_it(releases, script, request_for):
    promoting = asyncio.Event()
    release_promote = asyncio.Event()

    async def slow_promote() -> StepProgress:
        promoting.set()
        await release_promote.wait()
        return StepProgress(message="promoted")

    script.on("wait", "web", paused(1, 1), paused(2, 3), paused(3, 5), HEALTHY)
    script.on("promote", "web", slow_promote)
    service = CANARY.replace("for: 2s", "for: 1h")
    async with releases.running(request_for(APP, service), script) as running:
        await approve_when_asked(running)
        await asyncio.wait_for(promoting.wait(), 10)  # pause 1's own promote, by its rules
        release_promote.set()
        await running.until(lambda s: any("watching errors for 1h" in e.message for e in s.events), "the watch")
        promoting.clear()
        release_promote.clear()
        first = asyncio.ensure_future(running.steer("promote", by="ops"))
        await asyncio.wait_for(promoting.wait(), 10)
        second = asyncio.ensure_future(running.steer("abort", by="sre", reason="latency"))
        await asyncio.sleep(0.3)
        assert not second.done()  # accepted, waiting its turn
        release_promote.set()
        assert await first == "promoted past pause 2"
        assert await second == "aborting the canary; the release fails"
        done = await running.finish()
    assert done.reason == "production: canary web aborted by sre (latency)"
