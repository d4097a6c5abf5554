"""Checks and their tolerances: failures allowed in a row, and watches after deploying."""

from __future__ import annotations

from .harness import failed, inconclusive, passed


def app(check: str) -> str:
    """Staging with one check (YAML lines at check level), then production."""
    lines = "".join(f"        {line}\n" for line in check.strip().splitlines())
    return (
        "application: shop\nenvironments:\n  - name: staging\n    checks:\n"
        f"      - name: smoke\n        command: {{run: ./smoke.sh}}\n{lines}  - name: production\n"
    )


BEFORE_DEPLOY = app("when: [before_deploy]\non_failure: fail\nfailures_allowed: 1\ninterval: 100ms")


async def test_a_check_failing_failures_allowed_times_in_a_row_then_passing_is_tolerated(releases, script, request_for):
    script.on("evaluate", "smoke", failed(), passed("error rate 0.1%"))
    done = await releases.run(request_for(BEFORE_DEPLOY), script)
    assert done.state == "succeeded", done.reason
    assert script.count("evaluate", "smoke", "staging") == 2
    assert "check smoke (before deploy) passed: error rate 0.1%" in done.events
    assert script.ran("apply") == ["deploy", "deploy"]  # staging, then production
    assert done.ledger("staging") == done.ledger("production") == [("1.0.0", "succeeded")]


async def test_one_failure_more_than_allowed_fails_the_release_before_deploying(releases, script, request_for):
    script.on("evaluate", "smoke", failed(), failed("error rate 7%"), passed())
    done = await releases.run(request_for(BEFORE_DEPLOY), script)
    assert done.state == "failed"
    assert done.reason == "staging: check smoke (before deploy) failed: error rate 7%"
    assert script.count("evaluate", "smoke") == 2  # the second failure in a row is acted on
    assert script.ran("apply") == []
    assert done.phases == {"staging": "failed", "production": "skipped"}
    assert done.steps("staging") == {"deploy": "pending"}
    assert done.ledger("staging") == [("1.0.0", "failed")] and done.ledger("production") == []


async def test_a_watch_tolerates_failures_that_never_come_twice_in_a_row(releases, script, request_for):
    watch = app("when: [after_deploy]\nfor: 2s\ninterval: 100ms\nfailures_allowed: 1")
    script.on("evaluate", "smoke", *[failed(), passed()] * 30, environment="staging")
    done = await releases.run(request_for(watch), script)
    assert done.state == "succeeded", done.reason
    assert script.count("evaluate", "smoke", "staging") >= 3  # failed, passed, failed at least
    assert "check smoke (after deploy) passed for 2s" in done.events


async def test_a_watch_fails_the_release_on_one_failure_more_than_allowed_in_a_row(releases, script, request_for):
    watch = app("when: [after_deploy]\nfor: 1m\ninterval: 100ms\nfailures_allowed: 1")
    script.on("evaluate", "smoke", failed(), failed("error rate 9%"), passed())
    done = await releases.run(request_for(watch), script)
    assert done.state == "failed"
    assert done.reason == "staging: check smoke (after deploy) failed: error rate 9%"
    assert script.count("evaluate", "smoke") == 2  # the watch stops at the failure it acts on
    # The version was deployed in staging, which failed after deploying; production never started.
    assert done.steps("staging") == {"deploy": "succeeded"}
    assert done.phases == {"staging": "failed", "production": "skipped"}
    assert script.ran("apply") == ["deploy"]
    assert done.ledger("staging") == [("1.0.0", "failed")] and done.ledger("production") == []


async def test_a_watch_that_never_sees_a_pass_fails_after_deploying(releases, script, request_for):
    watch = app("when: [after_deploy]\nfor: 1s\ninterval: 200ms")
    script.on("evaluate", "smoke", inconclusive("no data for job:errors:ratio5m"))
    done = await releases.run(request_for(watch), script)
    assert done.state == "failed"
    assert done.reason == (
        "staging: check smoke (after deploy) failed: no conclusive result in 1s: no data for job:errors:ratio5m"
    )
    assert script.count("evaluate", "smoke") >= 2  # evaluated through the watch, acted on only at its end
    assert done.steps("staging") == {"deploy": "succeeded"}
    assert done.phases == {"staging": "failed", "production": "skipped"}
    assert done.ledger("staging") == [("1.0.0", "failed")] and done.ledger("production") == []


async def test_a_freeze_gate_that_cannot_be_evaluated_fails_the_release_and_leaves_the_lane(
    releases, script, request_for
):
    # The freeze gate runs as a local activity: its last failure arrives as a bare ApplicationError,
    # not an ActivityError. Uncaught, it failed the workflow with its status still "running", no
    # record in the ledger and the lane never left.
    from dataclasses import replace

    from temporalio.exceptions import ApplicationError

    from prodline.config.rules import FreezeRule, OnFailure, Precondition

    planned = request_for(BEFORE_DEPLOY)
    staging, production = planned.plan.environments
    gate = Precondition(
        name="freeze", freeze=FreezeRule(application="shop", environment="staging"), on_failure=OnFailure.wait
    )
    staging = staging.model_copy(update={"preconditions": [gate, *staging.preconditions]})
    planned = replace(planned, plan=planned.plan.model_copy(update={"environments": [staging, production]}))
    script.on("evaluate", "freeze", ApplicationError("application shop did not answer", non_retryable=True))
    done = await releases.run(planned, script)
    assert done.state == "failed", done.reason
    assert done.reason == "staging: precondition freeze could not be evaluated: application shop did not answer"
    assert script.ran("apply") == []
    assert done.ledger("staging") == [("1.0.0", "failed")]
