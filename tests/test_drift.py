"""Drift: a Schedule compares what runs with what was verified; self-healing corrects it."""

from __future__ import annotations

import pytest

from prodline.activities.ledger import read_lane
from prodline.contracts import drift_schedule_id

from conftest import APP, client_for, final_state, ledgers, run, service, wait_for

DEPLOY = 'echo "$PRODLINE_VERSION" > "../current-$PRODLINE_ENVIRONMENT"\n'
# The live file says which version runs; anything else is drift (exit 2).
FETCH = 'test "$(cat ../current-$PRODLINE_ENVIRONMENT)" = "$PRODLINE_VERSION" || { echo "found $(cat ../current-$PRODLINE_ENVIRONMENT)"; exit 2; }'


def drifting_project(project, self_heal: bool):
    app = APP + f"    drift: {{every: 1h, self_heal: {str(self_heal).lower()}}}\n"
    steps = f"  - name: deploy\n    command: {{apply: ./deploy.sh, fetch: '{FETCH}'}}\n    timeout: 30s\n"
    return project(service(steps), app=app, scripts={"deploy.sh": DEPLOY})


def check_now(temporal, project) -> None:
    """What the schedule does every `every`: start a drift check (triggered here, not waited for)."""

    async def trigger() -> None:
        client = await client_for(temporal)
        await client.get_schedule_handle(drift_schedule_id(project.application, "checkout", "production")).trigger()

    run(trigger())


def drift_report(temporal, project):
    async def read():
        return (await read_lane(await client_for(temporal), project.application, "checkout", "production")).drift

    return wait_for(lambda: run(read()), what="a drift report")


@pytest.mark.parametrize("self_heal", [False, True], ids=["observe", "self-heal"])
def test_drift_made_by_hand_is_reported_and_healed_only_when_asked(cli, worker, project, tmp_path, temporal, self_heal):
    service_file = drifting_project(project, self_heal)
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    check_now(temporal, project)
    clean = drift_report(temporal, project)
    assert (clean.version, clean.drifted) == ("1.0.0", False)

    (tmp_path / "current-production").write_text("hotfix-by-hand\n")
    check_now(temporal, project)
    report = wait_for(lambda: (r := drift_report(temporal, project)).drifted and r, what="drift found")
    assert report.steps["deploy"].startswith("drifted") and "found hotfix-by-hand" in report.steps["deploy"]
    if not self_heal:
        assert report.healing == ""
        assert (tmp_path / "current-production").read_text() == "hotfix-by-hand\n"
        return
    heal = report.healing
    assert heal.startswith(project.release_id("1.0.0") + "~heal-production-")
    final_state(cli, heal, "succeeded")
    assert (tmp_path / "current-production").read_text() == "1.0.0\n"
    _, production = ledgers(temporal, project)
    assert [(r.version, r.kind) for r in production] == [("1.0.0", "release"), ("1.0.0", "heal")]


def test_a_held_environment_is_reported_never_healed(cli, worker, project, tmp_path, temporal):
    service_file = drifting_project(project, self_heal=True)
    for version in ("1.0.0", "1.1.0"):
        assert cli.run("release", "start", str(service_file), "--version", version, "--wait").returncode == 0
    rolled = cli.run(
        "rollback", "checkout", "--environment", "production", "--reason", "1.1.0 is slow",
        "--application", project.application, "--wait",
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    (tmp_path / "current-production").write_text("hotfix-by-hand\n")
    check_now(temporal, project)
    report = wait_for(lambda: (r := drift_report(temporal, project)).drifted and r, what="drift found")
    assert report.version == "1.0.0"
    assert report.healing.startswith("not healed: production is held at 1.0.0")
    assert (tmp_path / "current-production").read_text() == "hotfix-by-hand\n"


def test_a_fetch_that_cannot_answer_is_reported_as_not_checked_and_never_healed(
    cli, worker, project, tmp_path, temporal
):
    # It counted as drift, and self-healing re-deployed for nothing found (a step whose fetch needs
    # an earlier step's outputs always failed so).
    app = APP + "    drift: {every: 1h, self_heal: true}\n"
    fetch = 'echo "the host does not answer" >&2; exit 1'
    steps = f"  - name: deploy\n    command: {{apply: ./deploy.sh, fetch: '{fetch}'}}\n    timeout: 30s\n"
    service_file = project(service(steps), app=app, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    check_now(temporal, project)
    report = drift_report(temporal, project)
    assert (report.drifted, report.steps, report.healing) == (False, {}, "")
    assert "could not be checked" in report.unchecked["deploy"], report
    status = cli.run("env", "status", "--application", project.application)
    assert "drift not checked in 1.0.0" in status.stdout and "the host does not answer" in status.stdout, status.stdout
    _, production = ledgers(temporal, project)
    assert [(r.version, r.kind) for r in production] == [("1.0.0", "release")]  # nothing healed
