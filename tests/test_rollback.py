"""Rollbacks: a failure restores the verified version exactly as recorded; a manual one holds."""

from __future__ import annotations

import json

from conftest import APP, approval_app, client_for, final_state, ledgers, run, service, step, waiting_in

ROLLING_APP = APP + "    rollback: {automatic: true}\n"
# Writes which version runs, then fails if this bundle's deploy is broken.
DEPLOY = 'echo "$PRODLINE_VERSION" > "../current-$PRODLINE_ENVIRONMENT"\n'


def test_a_failing_step_restores_the_verified_version_from_its_own_bundle(cli, worker, project, tmp_path, temporal):
    service_file = project(service(step("deploy", "./deploy.sh")), app=ROLLING_APP, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    # 1.1.0's bundle deploys, then fails in production (the new script, not the one 1.0.0 recorded).
    broken = DEPLOY + '[ "$PRODLINE_ENVIRONMENT" != production ] || { echo "migration failed" >&2; exit 3; }\n'
    project(service(step("deploy", "./deploy.sh")), app=ROLLING_APP, scripts={"deploy.sh": broken})
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
    assert result.returncode == 9, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "rolled_back"
    assert "migration failed" in outcome["reason"] and outcome["reason"].endswith("rolled back to 1.0.0")
    assert (tmp_path / "current-production").read_text() == "1.0.0\n"  # 1.0.0's own script ran again
    assert (tmp_path / "current-staging").read_text() == "1.1.0\n"
    _, production = ledgers(temporal, project)
    assert [(r.version, r.state.value, r.kind) for r in production] == [
        ("1.0.0", "succeeded", "release"),
        ("1.0.0", "succeeded", "rollback"),
        ("1.1.0", "rolled_back", "release"),
    ]
    assert production[-1].restored == "1.0.0"


def test_a_failing_after_deploy_check_rolls_back_and_checks_the_restored_version(cli, worker, project, tmp_path):
    app = ROLLING_APP + (
        "    checks:\n      - name: smoke\n        when: [after_deploy]\n"
        '        command: {run: \'v=$(cat ../current-production); echo "$v" >> ../checked; [ "$v" != 1.1.0 ]\'}\n'
    )
    service_file = project(service(step("deploy", "./deploy.sh")), app=app, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "rolled_back", outcome["reason"]
    assert "check smoke" in outcome["reason"]
    assert (tmp_path / "current-production").read_text() == "1.0.0\n"
    # The check ran on 1.0.0, on 1.1.0 (failed), then on the restored 1.0.0 again.
    assert (tmp_path / "checked").read_text().split() == ["1.0.0", "1.1.0", "1.0.0"]


def test_a_first_release_has_nothing_to_roll_back_to_and_says_so(cli, worker, project, tmp_path):
    broken = DEPLOY + "exit 3\n"
    service_file = project(service(step("deploy", "./deploy.sh")), app=ROLLING_APP, scripts={"deploy.sh": broken})
    head = "environments:\n  staging:\n    steps: {deploy: {command: {apply: 'true'}}}\n"
    service_file = project(
        service(step("deploy", "./deploy.sh"), head=head), app=ROLLING_APP, scripts={"deploy.sh": broken}
    )
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait", "--json")
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "failed"
    assert "not rolled back: nothing was verified there before" in outcome["reason"]


def test_a_rollback_that_fails_too_ends_rollback_failed_and_holds_the_lane(cli, worker, project, tmp_path):
    # The rollback re-runs 1.0.0's `rollback` command, which fails: the environment needs someone.
    rollback = ", rollback: 'echo restore broken >&2; exit 4'"
    service_file = project(
        service(step("deploy", "./deploy.sh", rollback)), app=ROLLING_APP, scripts={"deploy.sh": DEPLOY}
    )
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    broken = DEPLOY + '[ "$PRODLINE_ENVIRONMENT" != production ] || exit 3\n'
    project(service(step("deploy", "./deploy.sh", rollback)), app=ROLLING_APP, scripts={"deploy.sh": broken})
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
    assert result.returncode == 9, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "rollback_failed"
    assert "the rollback to 1.0.0 failed too" in outcome["reason"] and "restore broken" in outcome["reason"]
    # The lane is held: the next release waits, saying why.
    project(service(step("deploy", "./deploy.sh", rollback)), app=ROLLING_APP, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.2.0").returncode == 0
    waiting_in(cli, project.release_id("1.2.0"), "production", "the rollback failed")
    assert (tmp_path / "current-production").read_text() == "1.1.0\n"


def test_manual_rollback_cancels_a_release_waiting_for_approval_and_holds(cli, worker, project, tmp_path, temporal):
    app = approval_app() + "    rollback: {bypass: [approvals]}\n"
    service_file = project(service(step("deploy", "./deploy.sh")), app=app, scripts={"deploy.sh": DEPLOY})
    for version in ("1.0.0", "1.1.0"):
        assert cli.run("release", "start", str(service_file), "--version", version).returncode == 0
        waiting_in(cli, project.release_id(version), "production", "approval")
        assert cli.run("approve", project.release_id(version), "--as", "alice").returncode == 0
        final_state(cli, project.release_id(version), "succeeded")
    assert cli.run("release", "start", str(service_file), "--version", "1.2.0").returncode == 0
    waiting_in(cli, project.release_id("1.2.0"), "production", "approval")

    result = cli.run(
        "rollback", "checkout", "--environment", "production", "--reason", "checkout errors up",
        "--application", project.application, "--as", "bob", "--wait", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "succeeded" and outcome["version"] == "1.0.0"
    assert any("skips approval" in e["message"] and "checkout errors up" in e["message"] for e in outcome["events"])
    assert final_state(cli, project.release_id("1.2.0"), "cancelled")
    assert (tmp_path / "current-production").read_text() == "1.0.0\n"
    _, production = ledgers(temporal, project)
    rolled = production[-1]
    assert (rolled.version, rolled.kind, rolled.by, rolled.bypassed) == ("1.0.0", "rollback", "bob", ["approval"])
    assert rolled.reason == "checkout errors up"

    # Held: a new release waits, even once approved, until someone lifts the hold.
    assert cli.run("release", "start", str(service_file), "--version", "1.3.0").returncode == 0
    waiting_in(cli, project.release_id("1.3.0"), "production", "held at 1.0.0 by bob")
    unheld = cli.run(
        "unhold", "checkout", "--environment", "production", "--application", project.application, "--as", "bob"
    )
    assert unheld.returncode == 0, unheld.stderr
    assert "lifted by bob" in unheld.stdout
    waiting_in(cli, project.release_id("1.3.0"), "production", "approval")
    again = cli.run("unhold", "checkout", "--environment", "production", "--application", project.application)
    assert again.returncode == 8 and "not held" in again.stderr


def test_a_rollback_to_a_version_never_verified_there_is_refused(cli, worker, project, tmp_path, temporal):
    service_file = project(service(step("deploy", "./deploy.sh")), scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    back = ("rollback", "checkout", "--reason", "try", "--application", project.application)
    # The CLI says so at once, and starts nothing; so for a typo in the environment's name.
    result = cli.run(*back, "--environment", "production", "--to", "0.9.0", "--wait")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "0.9.0 was never verified in production: a rollback restores only what the ledger recorded there " in (
        result.stderr
    )
    assert "(verified there, newest first: 1.0.0)" in result.stderr
    typo = cli.run(*back, "--environment", "prod")
    assert typo.returncode == 2 and "has no environment 'prod' (its environments: staging, production)" in typo.stderr
    nothing = cli.run(*back, "--environment", "production")
    assert nothing.returncode == 2 and "nothing before it to roll back to" in nothing.stderr

    # The workflow refuses it too, for whoever starts one without the CLI.
    async def start_directly() -> str:
        from prodline.client import ReleaseClient
        from prodline.config.release import ReleaseRequest, RestoreOrder

        order = RestoreOrder(environment="production", kind="rollback", reason="try", nonce="0123456789ab")
        request = ReleaseRequest(
            application=project.application, service="checkout", version="0.9.0", initiator="eve", restore=order
        )
        client = ReleaseClient(await client_for(temporal), cli.env["PRODLINE_TASK_QUEUE"])
        return (await client.start(request)).release_id

    direct = final_state(cli, run(start_directly()), "failed")
    assert "0.9.0 was never verified in production" in direct["reason"]


def forge_record(temporal, project, tmp_path, **update) -> None:
    """Signal production's ledger a "verified" record of its first release, later and with a step
    that touches `pwned`, as anyone who can write to the namespace can."""
    from prodline.contracts import RECORD_SIGNAL, ledger_id

    _, production = ledgers(temporal, project)
    genuine = production[0]
    command = genuine.steps[0].command.model_copy(update={"apply": f"touch {tmp_path}/pwned"})
    later = genuine.finished_at.replace(microsecond=1)
    forged = genuine.model_copy(
        update={"steps": [genuine.steps[0].model_copy(update={"command": command})], "started_at": later,
                "finished_at": later, **update}
    )  # fmt: skip

    async def forge() -> None:
        handle = (await client_for(temporal)).get_workflow_handle(
            ledger_id(project.application, "checkout", "production")
        )
        await handle.signal(RECORD_SIGNAL, forged)

    run(forge())


def test_a_record_forged_into_the_ledger_is_never_restored(cli, worker, project, tmp_path, temporal):
    # Anyone who can write to the namespace can signal a ledger. A "verified" record naming a real
    # release but other steps would have a rollback run them, past the approvals it may bypass.
    service_file = project(service(step("deploy", "./deploy.sh")), scripts={"deploy.sh": DEPLOY})
    for version in ("1.0.0", "1.1.0"):
        assert cli.run("release", "start", str(service_file), "--version", version, "--wait").returncode == 0
    forge_record(temporal, project, tmp_path)  # 1.0.0 again, recorded later, with other steps
    result = cli.run(
        "rollback", "checkout", "--environment", "production", "--to", "1.0.0", "--reason", "r",
        "--application", project.application, "--wait", "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    reason = json.loads(result.stdout)["reason"]
    assert "refusing to restore 1.0.0 in production: the ledger's record of 1.0.0 in production" in reason, reason
    assert "is not one its release recorded" in reason
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "current-production").read_text() == "1.1.0\n"


def test_an_automatic_rollback_never_redeploys_a_forged_record(cli, worker, project, tmp_path, temporal):
    service_file = project(service(step("deploy", "./deploy.sh")), app=ROLLING_APP, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    forge_record(temporal, project, tmp_path, version="0.9.9")  # "verified last": what a rollback restores
    broken = DEPLOY + '[ "$PRODLINE_ENVIRONMENT" != production ] || exit 3\n'
    project(service(step("deploy", "./deploy.sh")), app=ROLLING_APP, scripts={"deploy.sh": broken})
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait", "--json")
    assert result.returncode == 9, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "rollback_failed"
    assert "not rolled back: the ledger's record of 0.9.9 in production" in outcome["reason"], outcome["reason"]
    assert not (tmp_path / "pwned").exists()


def test_a_heal_restores_only_the_live_version():
    from datetime import UTC, datetime

    from temporalio.exceptions import ApplicationError

    from prodline.activities.resolve import restored_record
    from prodline.config.release import ReleaseRequest, RestoreOrder
    from prodline.config.steps import CommandStep, Step
    from prodline.contracts import DeploymentRecord, DeploymentState, ReleaseRef

    def record(version: str, minute: int) -> DeploymentRecord:
        at = datetime(2026, 12, 2, 10, minute, tzinfo=UTC)
        return DeploymentRecord(
            **ReleaseRef.of("shop", "checkout", version), environment="production", state=DeploymentState.succeeded,
            started_at=at, finished_at=at, steps=[Step(name="deploy", command=CommandStep(apply="true"))],
            service_dir=".",
        )  # fmt: skip

    records = [record("1.0.0", 1), record("1.1.0", 2)]
    assert all(r.redeployable for r in records), "the records must be ones a rollback could restore"

    def heal(version: str) -> ReleaseRequest:
        order = RestoreOrder(environment="production", kind="heal", reason="drift", nonce="0123456789ab")
        return ReleaseRequest(application="shop", service="checkout", version=version, initiator="x", restore=order)

    assert restored_record(heal("1.1.0"), records).version == "1.1.0"
    # A heal started by hand (or by a drift check of one's own) naming an older verified version.
    try:
        restored_record(heal("1.0.0"), records)
    except ApplicationError as exc:
        assert exc.message == "a heal restores the version live in production, and 1.0.0 is not"
    else:
        raise AssertionError("a heal of 1.0.0 was accepted while 1.1.0 is live")
