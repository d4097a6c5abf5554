"""Lanes: one release of a service per environment at a time, newest never overwritten."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime

from conftest import approval_app, final_state, ledgers, service, step, wait_for, waiting_in

# Each deploy writes "start V" and "end V" around a pause: interleaved releases would show it.
DEPLOY = 'echo "start $PRODLINE_VERSION" >> "../log-$PRODLINE_ENVIRONMENT"; sleep 0.3; echo "end $PRODLINE_VERSION" >> "../log-$PRODLINE_ENVIRONMENT"\n'


def pairs(path) -> list[str]:
    lines = path.read_text().split("\n")[:-1]
    # Every start is followed by the end of the same version.
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert start.split()[1] == end.split()[1] and start.startswith("start") and end.startswith("end"), lines
    return [line.split()[1] for line in lines[::2]]


def test_releases_started_together_take_turns_in_each_environment(cli, worker, project, tmp_path, temporal):
    # Downgrades allowed: whichever order they get their turns in, all three deploy.
    head = "releases: {allow_downgrade: true}\n"
    service_file = project(service(step("deploy", "./deploy.sh"), head=head), scripts={"deploy.sh": DEPLOY})
    versions = ["3.0.1", "3.0.2", "3.0.3", "3.0.4", "3.0.5"]
    spawned = [cli.spawn("release", "start", str(service_file), "--version", v, "--wait") for v in versions]
    outcomes = [p.communicate(timeout=120) for p in spawned]
    assert [p.returncode for p in spawned] == [0] * len(versions), outcomes
    for env in ("staging", "production"):
        assert sorted(pairs(tmp_path / f"log-{env}")) == versions
    staging, production = ledgers(temporal, project)
    assert len(staging) == len(production) == len(versions)
    # In each environment the deployments ran in the order the ledger granted the lane.
    for records, env in ((staging, "staging"), (production, "production")):
        assert [r.version for r in records] == pairs(tmp_path / f"log-{env}")


def test_a_release_waits_for_the_one_ahead_and_says_so(cli, worker, project, tmp_path):
    service_file = project(service(step("deploy", "./deploy.sh")), app=approval_app(), scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "7.0.0").returncode == 0
    waiting_in(cli, project.release_id("7.0.0"), "production", "approval")
    assert cli.run("release", "start", str(service_file), "--version", "7.0.1").returncode == 0
    waiting_in(
        cli, project.release_id("7.0.1"), "production", f"waiting for {project.release_id('7.0.0')} to leave production"
    )
    # A third waits for the second, which leaves production before it whether it holds the lane or not.
    assert cli.run("release", "start", str(service_file), "--version", "7.0.2").returncode == 0
    waiting_in(
        cli, project.release_id("7.0.2"), "production", f"waiting for {project.release_id('7.0.1')} to leave production"
    )
    # 7.0.0 is approved and deployed; 7.0.1 then gets its turn, and its approval.
    assert cli.run("approve", project.release_id("7.0.0"), "--as", "alice").returncode == 0
    waiting_in(cli, project.release_id("7.0.1"), "production", "approval")
    waiting_in(
        cli, project.release_id("7.0.2"), "production", f"waiting for {project.release_id('7.0.1')} to leave production"
    )
    assert cli.run("approve", project.release_id("7.0.1"), "--as", "alice").returncode == 0
    waiting_in(cli, project.release_id("7.0.2"), "production", "approval")
    assert cli.run("approve", project.release_id("7.0.2"), "--as", "alice").returncode == 0
    final_state(cli, project.release_id("7.0.2"), "succeeded")
    assert pairs(tmp_path / "log-production") == ["7.0.0", "7.0.1", "7.0.2"]


def test_an_older_version_never_lands_over_a_newer_one(cli, worker, project, tmp_path, temporal):
    service_file = project(service(step("deploy", "./deploy.sh")), scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "2.2.0", "--wait").returncode == 0
    result = cli.run("release", "start", str(service_file), "--version", "2.0.0", "--wait", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert "2.0.0 is older than 2.2.0, live in staging" in outcome["reason"]
    assert "prodline rollback" in outcome["reason"]
    assert pairs(tmp_path / "log-staging") == ["2.2.0"]
    staging, _ = ledgers(temporal, project)
    assert [r.version for r in staging] == ["2.2.0"]  # nothing deployed: nothing recorded


def test_a_newer_version_supersedes_older_ones_waiting_only_where_asked(cli, worker, project, tmp_path):
    head = "releases: {supersede: true}\n"
    scripts = {"deploy.sh": DEPLOY}
    service_file = project(service(step("deploy", "./deploy.sh"), head=head), app=approval_app(), scripts=scripts)
    for version in ("5.0.0", "5.0.1"):
        assert cli.run("release", "start", str(service_file), "--version", version).returncode == 0
    waiting_in(cli, project.release_id("5.0.0"), "production", "approval")
    waiting_in(cli, project.release_id("5.0.1"), "production", "to leave production")
    assert cli.run("release", "start", str(service_file), "--version", "5.0.2").returncode == 0
    # 5.0.1 waited behind 5.0.0 and is superseded by 5.0.2; 5.0.0, which holds the lane, is not.
    status = final_state(cli, project.release_id("5.0.1"), "superseded")
    assert status["reason"] == f"superseded by {project.release_id('5.0.2')} while waiting for production"
    assert {e["name"]: e["phase"] for e in status["environments"]} == {"staging": "succeeded", "production": "skipped"}
    assert cli.run("approve", project.release_id("5.0.0"), "--as", "alice").returncode == 0
    waiting_in(cli, project.release_id("5.0.2"), "production", "approval")
    assert cli.run("approve", project.release_id("5.0.2"), "--as", "alice").returncode == 0
    final_state(cli, project.release_id("5.0.2"), "succeeded")
    assert pairs(tmp_path / "log-production") == ["5.0.0", "5.0.2"]  # 5.0.1 never reached production
    listed = cli.run("release", "list", "--application", project.application, "--state", "superseded", "--json")
    assert [r["release_id"] for r in json.loads(listed.stdout)] == [project.release_id("5.0.1")]


def test_a_frozen_environment_holds_releases_until_it_is_unfrozen(cli, worker, project, tmp_path):
    service_file = project(service(step("deploy", "./deploy.sh")), scripts={"deploy.sh": DEPLOY})
    cli.apply(tmp_path / "prodline.yaml")
    app = ("--application", project.application)
    frozen = cli.run("freeze", *app, "--environment", "production", "--reason", "incident 42", "--as", "carol")
    assert frozen.returncode == 0, frozen.stdout + frozen.stderr
    assert cli.run("release", "start", str(service_file), "--version", "4.0.0").returncode == 0
    waiting_in(cli, project.release_id("4.0.0"), "production", "frozen by carol")
    assert pairs(tmp_path / "log-staging") == ["4.0.0"] and not (tmp_path / "log-production").exists()
    assert cli.run("unfreeze", *app, "--environment", "production", "--as", "carol").returncode == 0
    final_state(cli, project.release_id("4.0.0"), "succeeded")
    assert pairs(tmp_path / "log-production") == ["4.0.0"]


def contiguous(path) -> list[str]:
    """The versions in the log, each one block: a retried step may repeat its own lines, but
    no other version's line ever falls inside its block."""
    versions = [line.split()[1] for line in path.read_text().split("\n")[:-1]]
    blocks = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert len(blocks) == len(set(blocks)), versions
    return blocks


def test_lanes_hold_across_a_worker_killed_mid_deploy(cli, project, tmp_path):
    head = "releases: {allow_downgrade: true}\n"
    service_file = project(service(step("deploy", "./deploy.sh"), head=head), scripts={"deploy.sh": DEPLOY})
    worker = cli.worker()
    try:
        versions = ["6.0.1", "6.0.2", "6.0.3"]
        for version in versions:
            assert cli.run("release", "start", str(service_file), "--version", version).returncode == 0
        wait_for(lambda: (tmp_path / "log-staging").exists(), what="the first deploy to start")
        os.killpg(worker.pid, signal.SIGKILL)  # mid-step, with two releases waiting in the lane
        worker.wait()
        worker = cli.worker()
        for version in versions:
            final_state(cli, project.release_id(version), "succeeded")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    for env in ("staging", "production"):
        assert sorted(contiguous(tmp_path / f"log-{env}")) == versions


def test_a_late_waiting_answer_never_replaces_superseded():
    # Temporal does not order signals from one workflow to another: the ledger's "waiting for the
    # holder" can arrive after its "superseded by 1.0.1". Taking the late one, the release waited
    # forever for a turn the ledger, having dropped it, would never give.
    from prodline.config.release import ReleaseRequest
    from prodline.contracts import LaneTurn, ReleaseRef, ReleaseStatus
    from prodline.workflows.lane import Lanes
    from prodline.workflows.status import StatusBoard

    request = ReleaseRequest(application="shop", service="checkout", version="1.0.0", initiator="ci")
    board = StatusBoard(ReleaseStatus(**ReleaseRef.of("shop", "checkout", "1.0.0"), initiator="ci"))
    for final in (True, False):  # the fix, and older releases that replay without it
        lanes = Lanes(request, board)
        lanes.superseded_is_final = final
        lanes.expect("production")
        lanes.told(LaneTurn(environment="production", superseded_by="shop.checkout@1.0.1"))
        lanes.told(LaneTurn(environment="production", ahead="shop.checkout@0.9.0"))
        answer = lanes.answer("production")
        assert answer is not None
        assert answer.superseded_by == ("shop.checkout@1.0.1" if final else ""), answer


def test_an_answer_numbered_before_the_one_a_release_has_is_ignored():
    # "held" then "no longer held" (after an unhold), arriving the other way round: the release
    # showed "held at ..." for as long as it waited. Ledgers number their answers; older ones lose.
    from prodline.config.release import ReleaseRequest
    from prodline.contracts import Hold, LaneTurn, ReleaseRef, ReleaseStatus
    from prodline.workflows.lane import Lanes
    from prodline.workflows.status import StatusBoard

    request = ReleaseRequest(application="shop", service="checkout", version="1.0.0", initiator="ci")
    lanes = Lanes(request, StatusBoard(ReleaseStatus(**ReleaseRef.of("shop", "checkout", "1.0.0"), initiator="ci")))
    lanes.expect("production")
    hold = Hold(version="0.9.0", by="bob", reason="rolled back", at=datetime.now(UTC), kind="rollback")
    lanes.told(LaneTurn(environment="production", ahead="shop.checkout@0.9.1", number=8))
    lanes.told(LaneTurn(environment="production", ahead="shop.checkout@0.9.1", held=hold, number=7))
    answer = lanes.answer("production")
    assert answer is not None and answer.held is None and answer.number == 8
    # An older ledger numbers nothing: the last answer stands, as before.
    lanes.told(LaneTurn(environment="production", ahead="shop.checkout@0.9.2"))
    assert lanes.answer("production").ahead == "shop.checkout@0.9.2"  # type: ignore[union-attr]
