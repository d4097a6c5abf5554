"""Approvals, rejections, pauses, soak times and deploy windows, end to end."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from conftest import approval_app, client_for, ledgers, run, service, step, waiting_in


def test_approvals_need_distinct_allowed_people_and_refusals_are_recorded(cli, worker, project, tmp_path, temporal):
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')),
        app=approval_app("{approvers: [alice, bob, ci-bot], min_approvers: 2, forbid_initiator: true}"),
    )
    release = project.release_id("3.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "3.0.0", "--wait")
    status = waiting_in(cli, release, "production", "0/2 approvals")
    assert status["state"] == "waiting"
    assert (tmp_path / "deployed-staging").exists() and not (tmp_path / "deployed-production").exists()

    def decide(*args: str):
        return cli.run("approve", release, *args)

    wrong_person = decide("--as", "mallory", "--comment", "lgtm")
    assert wrong_person.returncode == 8
    assert "refused: mallory may not decide for production (approvers: alice, bob, ci-bot)" in wrong_person.stdout
    initiator = decide("--as", "ci-bot")
    assert initiator.returncode == 8 and "ci-bot started this release and may not approve it" in initiator.stdout
    wrong_env = decide("--as", "alice", "--environment", "staging")
    assert wrong_env.returncode == 8 and "waiting in production, not staging" in wrong_env.stdout
    first = decide("--as", "alice", "--comment", "dashboards green")
    assert (
        first.returncode == 0
        and "approve by alice counted: production: precondition approval: 1/2 approvals (alice)" in first.stdout
    )
    assert "approve checkout 3.0.0 into production (started by ci-bot)" in first.stdout
    twice = decide("--as", "alice")
    assert twice.returncode == 8 and "alice already approved" in twice.stdout
    waiting_in(cli, release, "production", "1/2 approvals (alice)")
    assert not (tmp_path / "deployed-production").exists()
    assert decide("--as", "bob").returncode == 0

    assert waiting.wait(60) == 0, waiting.stdout.read()
    assert (tmp_path / "deployed-production").exists()
    decisions = cli.json("release", "status", release)["decisions"]
    assert [(d["by"], d["accepted"]) for d in decisions] == [
        ("mallory", False), ("ci-bot", False), ("alice", False), ("alice", True), ("alice", False), ("bob", True)
    ]  # fmt: skip
    assert decisions[0]["comment"] == "lgtm"

    # Every attempt, refused ones included, is an Update in the workflow's history, answered there.
    async def events():
        client = await client_for(temporal)
        return (await client.get_workflow_handle(release).fetch_history()).events

    history = run(events())
    kinds = [e.WhichOneof("attributes") for e in history]
    assert kinds.count("workflow_execution_update_accepted_event_attributes") == 6
    assert kinds.count("workflow_execution_update_completed_event_attributes") == 6
    # Decisions are Updates; the only signals are the ledgers' answers about lanes.
    signals = {
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history
        if e.HasField("workflow_execution_signaled_event_attributes")
    }
    assert signals == {"turn"}
    late = cli.run("approve", release, "--as", "bob")
    assert late.returncode == 8 and "already succeeded" in late.stderr


def test_a_rejection_ends_the_release_as_rejected(cli, worker, project, tmp_path):
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')), app=approval_app("{approvers: [alice]}")
    )
    release = project.release_id("3.0.1")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "3.0.1", "--wait", "--json")
    waiting_in(cli, release, "production")
    assert cli.run("reject", release, "--as", "alice", "--comment", "error budget spent").returncode == 0
    assert waiting.wait(60) == 3
    outcome = json.loads(waiting.stdout.read())
    assert outcome["state"] == "rejected"
    assert outcome["reason"] == "production: rejected by alice: error budget spent"
    assert not (tmp_path / "deployed-production").exists()
    assert [
        r["release_id"]
        for r in cli.json("release", "list", "--application", project.application, "--state", "rejected")
    ] == [release]


def test_an_approval_timeout_ends_the_release_as_timed_out(cli, worker, project, tmp_path):
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')), app=approval_app("{timeout: 1s}")
    )
    result = cli.run("release", "start", str(service_file), "--version", "3.0.2", "--wait")
    assert result.returncode == 5, result.stdout
    assert "timed out after 1s" in result.stdout
    assert not (tmp_path / "deployed-production").exists()


def test_production_waits_until_staging_has_soaked(cli, worker, project, temporal):
    app = """
application: shop
environments:
  - name: staging
  - name: production
    preconditions:
      - stable: {environment: staging, soak: 3s}
"""
    service_file = project(service(step("deploy", "true")), app=app)
    waiting = cli.spawn("release", "start", str(service_file), "--version", "3.0.3", "--wait")
    status = waiting_in(cli, project.release_id("3.0.3"), "production", "soaking 3s")
    assert "3.0.3 live in staging since" in json.dumps(status)
    assert waiting.wait(60) == 0

    staging, production = ledgers(temporal, project)
    # Production went live only after staging had been live for the soak time.
    assert (production[0].finished_at - staging[0].finished_at).total_seconds() >= 3


def test_outside_the_deploy_window_the_release_waits_and_says_until_when(cli, worker, project):
    # Open only on a day three days away in Auckland: closed now, whatever the clock says.
    day = (datetime.now(ZoneInfo("Pacific/Auckland")) + timedelta(days=3)).strftime("%a")
    app = f"""
application: shop
environments:
  - name: staging
    preconditions:
      - window: {{days: [{day.lower()}], hours: "03:00-03:01", timezone: Pacific/Auckland}}
"""
    service_file = project(service(step("deploy", "touch ../deployed")), app=app)
    release = project.release_id("3.0.4")
    cli.run("release", "start", str(service_file), "--version", "3.0.4")
    status = waiting_in(cli, release, "staging", "outside the deploy window")
    env = status["environments"][0]
    assert f"opens {day}" in env["waiting_on"] and "03:00 Pacific/Auckland" in env["waiting_on"]
    assert env["steps"][0]["phase"] == "pending"
    assert cli.run("release", "cancel", release, "--wait").returncode == 0


def paused_app(preconditions: str = "") -> str:
    """Staging with a QA sign-off check that pauses the release when it fails."""
    return f"""
application: shop
environments:
  - name: staging
{preconditions}    checks:
      - command: {{run: "test -f approved-by-qa"}}
        name: qa-signoff
        when: [before_deploy]
        on_failure: pause
"""


def test_a_paused_check_waits_for_a_person_to_resume(cli, worker, project, tmp_path):
    service_file = project(service(step("deploy", "touch ../deployed")), app=paused_app())
    release = project.release_id("3.0.5")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "3.0.5", "--wait")
    waiting_in(cli, release, "staging", "paused on check qa-signoff")
    assert not (tmp_path / "deployed").exists()
    assert cli.run("approve", release, "--as", "qa-lead", "--comment", "checked by hand").returncode == 0
    assert waiting.wait(60) == 0
    assert (tmp_path / "deployed").exists()
    assert "check qa-signoff (before deploy) overridden" in waiting.stdout.read()


def test_resuming_a_pause_follows_the_environments_approval_rule(cli, worker, project, tmp_path):
    approval = "    preconditions:\n      - approval: {approvers: [alice, ci-bot], forbid_initiator: true}\n"
    service_file = project(service(step("deploy", "touch ../deployed")), app=paused_app(approval))
    release = project.release_id("3.0.6")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "3.0.6", "--wait")
    waiting_in(cli, release, "staging", "approvals")
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    waiting_in(cli, release, "staging", "paused on check qa-signoff")
    initiator = cli.run("approve", release, "--as", "ci-bot")
    assert initiator.returncode == 8 and "ci-bot started this release and may not approve it" in initiator.stdout
    stranger = cli.run("approve", release, "--as", "mallory")
    assert stranger.returncode == 8 and "mallory may not decide for staging" in stranger.stdout
    assert not (tmp_path / "deployed").exists()
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert waiting.wait(60) == 0
    assert (tmp_path / "deployed").exists()
