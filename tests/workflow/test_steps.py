"""Steps: what approvers and users see of plans and applies, and plans that go stale."""

from __future__ import annotations

from prodline.contracts import StepResult
from prodline.workflows.release import MAX_PLANS

from .harness import stale

APP = """
application: shop
environments:
  - name: staging
    checks:
      - name: smoke
        command: {run: ./smoke.sh}
        when: [before_approval]
  - name: production
"""


def service(on_stale_plan: str = "replan") -> str:
    return f"""
service: checkout
application: shop
steps:
  - name: prepare
    command: {{apply: ./prepare.sh}}
  - name: infra
    terraform: {{dir: infra, on_stale_plan: {on_stale_plan}}}
  - name: deploy
    command: {{apply: ./deploy.sh}}
"""


STALE = "the approved plan is stale: the state changed after it was made (Saved plan is stale)"


async def test_a_plan_stale_at_every_apply_fails_the_release_after_the_last_plan(releases, script, request_for):
    script.on("apply", "infra", stale(STALE))
    done = await releases.run(request_for(APP, service()), script)
    assert done.state == "failed"
    assert done.reason == f"staging: step infra: {STALE}"
    assert MAX_PLANS == 3
    assert script.count("plan", "infra") == script.count("apply", "infra") == 3
    # Every new plan went back through the environment's rules (approvers see it again)...
    assert script.count("evaluate", "smoke") == 3
    assert sum("planning again and asking for approval again" in e for e in done.events) == 2
    # ...and the step applied before the stale one never ran again; nothing after it ran.
    assert script.ran("apply") == ["prepare", "infra", "infra", "infra"]
    assert done.steps("staging")["prepare"] == "succeeded" and done.steps("staging")["deploy"] == "pending"
    assert done.phases == {"staging": "failed", "production": "skipped"}
    assert done.ledger("staging") == [("1.0.0", "failed")] and done.ledger("production") == []


async def test_the_step_whose_stale_plan_ends_the_release_shows_failed(releases, script, request_for):
    script.on("apply", "infra", stale(STALE))
    done = await releases.run(request_for(APP, service(on_stale_plan="fail")), script)
    assert done.steps("staging") == {"prepare": "succeeded", "infra": "failed", "deploy": "pending"}


async def test_on_stale_plan_fail_fails_at_the_first_stale_plan(releases, script, request_for):
    script.on("apply", "infra", stale(STALE))
    done = await releases.run(request_for(APP, service(on_stale_plan="fail")), script)
    assert done.state == "failed"
    assert done.reason == f"staging: step infra: {STALE}"
    assert script.count("plan", "infra") == 1 and script.count("evaluate", "smoke") == 1  # no second plan
    assert not any("planning again" in e for e in done.events)
    assert script.ran("apply") == ["prepare", "infra"]
    assert done.ledger("staging") == [("1.0.0", "failed")] and done.ledger("production") == []


async def test_a_step_shows_its_plan_and_the_tail_of_its_output(releases, script, request_for):
    script.on("plan", "infra", StepResult(summary="1 to add, 0 to change, 0 to destroy", output="+ aws_db.main"))
    script.on("apply", "infra", StepResult(summary="1 added", output="aws_db.main: Creating...\naws_db.main: Created"))
    done = await releases.run(request_for(APP, service()), script)
    assert done.state == "succeeded", done.reason
    infra = next(s for s in done.status.environment("production").steps if s.name == "infra")
    assert (infra.phase.value, infra.summary) == ("succeeded", "1 added")
    assert infra.plan == "+ aws_db.main"  # what approvers were shown
    assert infra.output == "aws_db.main: Creating...\naws_db.main: Created"  # what the apply printed
    assert "plan of infra: 1 to add, 0 to change, 0 to destroy\n+ aws_db.main" in done.events
