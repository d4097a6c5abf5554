"""`prodline env status` and `release list --environment`: what runs where, read from the ledgers' lanes.

Real releases on the session's Temporal server. The commands are called through their
handlers (``cli/env.py``) with the arguments argparse would give them, their output
captured as printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime

import pytest
import structlog

from prodline.cli import env
from prodline.client import lanes
from prodline.contracts import DeploymentRecord, DriftReport, LaneEntry, live_deployment
from prodline.errors import InvalidInput, NotFound, Unavailable

from conftest import APP, WorkerThread, approval_app, final_state, ledgers, service, step, waiting_in

DEPLOY = 'echo "$PRODLINE_VERSION" > "../current-$PRODLINE_ENVIRONMENT"\n'


@pytest.fixture(autouse=True)
def worker_logs_to_stderr():
    """The in-process worker's structlog prints to stdout unless configured: not into the command's output."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    yield
    structlog.configure(**saved)


def args(temporal, task_queue, **fields) -> argparse.Namespace:
    """What argparse gives the handlers: the connection options, --json, and the command's own."""
    values = {"application": None, "service": None, "json": False, **fields}
    return argparse.Namespace(address=temporal.address, namespace="default", task_queue=task_queue, **values)


def minute(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}Z"


def bundle(record: DeploymentRecord) -> str:
    return record.bundle.removeprefix("sha256:")[:12]


def printed(capsys, handler, namespace: argparse.Namespace) -> str:
    assert handler(namespace) == 0
    return capsys.readouterr().out


def test_env_status_shows_what_is_live_who_approved_it_what_runs_and_what_waits(
    cli, worker, project, temporal, task_queue, capsys
):
    service_file = project(service(step("deploy", "./deploy.sh")), app=approval_app(), scripts={"deploy.sh": DEPLOY})
    rid = project.release_id
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0").returncode == 0
    waiting_in(cli, rid("1.0.0"), "production", "approval")
    assert cli.run("approve", rid("1.0.0"), "--as", "alice").returncode == 0
    final_state(cli, rid("1.0.0"), "succeeded")
    # 1.1.0 holds production's lane (waiting for its approval); 1.2.0 waits behind it.
    assert cli.run("release", "start", str(service_file), "--version", "1.1.0").returncode == 0
    waiting_in(cli, rid("1.1.0"), "production", "approval")
    assert cli.run("release", "start", str(service_file), "--version", "1.2.0").returncode == 0
    waiting_in(cli, rid("1.2.0"), "production", "to leave production")

    staging, production = (live_deployment(records) for records in ledgers(temporal, project))
    assert staging is not None and production is not None
    assert (staging.version, production.version, production.revision) == ("1.2.0", "1.0.0", 1)
    app = project.application
    out = printed(capsys, env.status, args(temporal, task_queue, application=app))
    assert out.splitlines() == [
        f"staging     checkout  1.2.0  live since {minute(staging.finished_at)}, bundle {bundle(staging)}, revision 1",
        f"production  checkout  1.0.0  live since {minute(production.finished_at)}, approved by alice, "
        f"bundle {bundle(production)}, revision 1",
        f"  running: {rid('1.1.0')} (release)",
        f"  queued: {rid('1.2.0')}",
    ]

    lanes = json.loads(printed(capsys, env.status, args(temporal, task_queue, application=app, json=True)))
    assert [(lane["environment"], lane["service"]) for lane in lanes] == [
        ("staging", "checkout"),
        ("production", "checkout"),
    ]
    lane = lanes[1]
    assert lane["live"]["version"] == "1.0.0" and lane["live"]["approved_by"] == ["alice"]
    assert lane["live"]["bundle"] == production.bundle and lane["live"]["kind"] == "release"
    assert lane["holder"]["version"] == "1.1.0" and [e["version"] for e in lane["queue"]] == ["1.2.0"]
    assert lane["hold"] is None and lane["needs_attention"] is False

    # release list --environment: the running release first, then the queue in turn order.
    listed = printed(
        capsys, env.list_environment, args(temporal, task_queue, application=app, environment="production")
    )
    assert [line.split() for line in listed.splitlines()] == [
        ["RELEASE", "LANE", "VERSION", "KIND"],
        [rid("1.1.0"), "running", "1.1.0", "release"],
        [rid("1.2.0"), "queued", "1.2.0", "release"],
    ]
    rows = printed(
        capsys, env.list_environment, args(temporal, task_queue, application=app, environment="production", json=True)
    )
    assert json.loads(rows)[1] == {"release_id": rid("1.2.0"), "place": "queued", "version": "1.2.0", "kind": "release"}
    quiet = printed(capsys, env.list_environment, args(temporal, task_queue, application=app, environment="staging"))
    assert quiet == "nothing running or queued in staging\n"

    # 1.1.0 approved: it is live, and 1.2.0 has the lane.
    assert cli.run("approve", rid("1.1.0"), "--as", "alice").returncode == 0
    final_state(cli, rid("1.1.0"), "succeeded")
    waiting_in(cli, rid("1.2.0"), "production", "approval")
    out = printed(capsys, env.status, args(temporal, task_queue, application=app, service="checkout"))
    assert out.splitlines()[1].startswith("production  checkout  1.1.0  live since ")
    assert out.splitlines()[2:] == [f"  running: {rid('1.2.0')} (release)"]


def test_env_status_shows_every_service_the_application_lists_in_promotion_order(
    cli, worker, project, temporal, task_queue, capsys
):
    app_file = APP.replace("environments:\n", "services: [checkout, cart]\nenvironments:\n", 1)
    service_file = project(service(step("deploy", "./deploy.sh")), app=app_file, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    app = project.application
    out = printed(capsys, env.status, args(temporal, task_queue, application=app))
    lines = out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["staging", "checkout", "1.0.0"],
        ["staging", "cart", "-"],
        ["production", "checkout", "1.0.0"],
        ["production", "cart", "-"],
    ]
    assert lines[0].startswith("staging     checkout  1.0.0  live since ")
    assert lines[1] == "staging     cart      -      nothing verified here yet"
    only = printed(capsys, env.status, args(temporal, task_queue, application=app, service="cart"))
    assert only.splitlines() == [
        "staging     cart  -  nothing verified here yet",
        "production  cart  -  nothing verified here yet",
    ]

    with pytest.raises(InvalidInput, match=r"'billing' is not one of .* services \(revision 1 lists: checkout, cart\)"):
        env.status(args(temporal, task_queue, application=app, service="billing"))
    with pytest.raises(InvalidInput, match=r"has no environment 'prod' \(its environments: staging, production\)"):
        env.list_environment(args(temporal, task_queue, application=app, environment="prod"))
    with pytest.raises(NotFound, match="'nowhere' is not registered"):
        env.status(args(temporal, task_queue, application="nowhere"))


def test_a_manual_rollback_shows_as_held_with_who_why_and_how_to_lift_it(
    cli, worker, project, temporal, task_queue, capsys, monkeypatch, tmp_path
):
    app_file = approval_app() + "    rollback: {bypass: [approvals]}\n"
    service_file = project(service(step("deploy", "./deploy.sh")), app=app_file, scripts={"deploy.sh": DEPLOY})
    for version in ("1.0.0", "1.1.0"):
        assert cli.run("release", "start", str(service_file), "--version", version).returncode == 0
        waiting_in(cli, project.release_id(version), "production", "approval")
        assert cli.run("approve", project.release_id(version), "--as", "alice").returncode == 0
        final_state(cli, project.release_id(version), "succeeded")
    rolled = cli.run(
        "rollback", "checkout", "--environment", "production", "--reason", "checkout errors up",
        "--application", project.application, "--as", "bob", "--wait",
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert cli.run("release", "start", str(service_file), "--version", "1.2.0").returncode == 0
    waiting_in(cli, project.release_id("1.2.0"), "production", "held at 1.0.0 by bob")

    frozen = cli.run(
        "freeze", "--application", project.application, "--environment", "production", "--reason", "change window",
        "--as", "carol", "--json",
    )  # fmt: skip
    assert frozen.returncode == 0, frozen.stderr
    since = datetime.fromisoformat(json.loads(frozen.stdout)["at"])

    monkeypatch.chdir(tmp_path)  # next to the application's prodline.yaml: no --application needed
    _, records = ledgers(temporal, project)
    live = live_deployment(records)
    assert live is not None and live.kind == "rollback"
    out = printed(capsys, env.status, args(temporal, task_queue))
    assert out.splitlines()[1:] == [
        f"production  checkout  1.0.0  live since {minute(live.finished_at)}, a rollback by bob, "
        f"bundle {bundle(live)}, revision 1",
        f"  FROZEN: production is frozen by carol since {since:%H:%M}Z: change window",
        f"  queued: {project.release_id('1.2.0')}",
        f"  HELD at 1.0.0 by bob since {minute(live.finished_at)}: rolled back (checkout errors up) — "
        "prodline unhold checkout --environment production",
    ]
    lane = json.loads(printed(capsys, env.status, args(temporal, task_queue, json=True)))[1]
    assert lane["hold"]["kind"] == "rollback" and lane["needs_attention"] is False
    assert lane["frozen"].endswith(": change window")


def test_a_failed_rollback_shows_the_environment_as_needing_attention(
    cli, worker, project, temporal, task_queue, capsys
):
    rolling = APP + "    rollback: {automatic: true}\n"
    rollback = ", rollback: 'echo restore broken >&2; exit 4'"
    service_file = project(service(step("deploy", "./deploy.sh", rollback)), app=rolling, scripts={"deploy.sh": DEPLOY})
    assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    broken = DEPLOY + '[ "$PRODLINE_ENVIRONMENT" != production ] || exit 3\n'
    project(service(step("deploy", "./deploy.sh", rollback)), app=rolling, scripts={"deploy.sh": broken})
    result = cli.run("release", "start", str(service_file), "--version", "1.1.0", "--wait")
    assert result.returncode == 9, result.stdout + result.stderr

    _, records = ledgers(temporal, project)
    verified, failed = live_deployment(records), records[-1]
    assert verified is not None and verified.version == "1.0.0" and failed.state.value == "rollback_failed"
    app = project.application
    out = printed(capsys, env.status, args(temporal, task_queue, application=app))
    assert out.splitlines()[1:] == [
        f"production  checkout  1.0.0  last verified {minute(verified.finished_at)}, bundle {bundle(verified)}, "
        "revision 1",
        f"  NEEDS ATTENTION since {minute(failed.finished_at)}: the rollback failed: {failed.reason} — once it is "
        f"fixed: prodline unhold checkout --environment production --application {app}",
    ]
    assert "restore broken" in failed.reason, failed.reason
    lane = json.loads(printed(capsys, env.status, args(temporal, task_queue, application=app, json=True)))[1]
    assert lane["needs_attention"] is True and lane["hold"]["kind"] == "attention"


def test_an_application_with_nothing_released_says_so(cli, project, temporal, task_queue, capsys):
    project(service(step("deploy", "true")))
    cli.apply(project.root / "prodline.yaml")
    out = printed(capsys, env.status, args(temporal, task_queue, application=project.application))
    assert out == f"nothing released of {project.application} yet (revision 1)\n"


def test_lanes_no_worker_answers_for_are_reported_not_waited_on(cli, project, temporal, capsys, monkeypatch):
    queue = f"gone-{uuid.uuid4().hex[:8]}"
    cli.env["PRODLINE_TASK_QUEUE"] = queue
    service_file = project(service(step("deploy", "true")))
    running = WorkerThread(temporal.address, queue).start()
    try:
        assert cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait").returncode == 0
    finally:
        running.stop()
    monkeypatch.setattr(lanes, "ANSWER_SECONDS", 0.5)
    with pytest.raises(Unavailable, match=r"no worker answered for deployments:.*checkout:staging within 0\.5s"):
        env.status(args(temporal, queue, application=project.application))


def test_env_status_renders_drift_and_rollbacks_waiting_their_turn():
    at = datetime(2026, 12, 2, 10, 14, 59, tzinfo=UTC)
    entry = {"run_id": "r", "requested_at": at}
    lane = lanes.EnvironmentLane(
        "shop",
        "checkout",
        "production",
        live=lanes.Live(
            "2.2.0", "shop.checkout@2.2.0", at, ["alice", "bob"], "sha256:" + "3f2a9c1b7d0e" * 5, 4, "release", "ci"
        ),
        holder=LaneEntry(release_id="shop.checkout@2.3.0", version="2.3.0", **entry),
        queue=[
            LaneEntry(release_id="shop.checkout@rollback-1", version="2.1.0", kind="rollback", by="bob", **entry),
            LaneEntry(release_id="shop.checkout@2.4.0", version="2.4.0", **entry),
        ],
        drift=DriftReport(checked_at=at, version="2.2.0", drifted=True, steps={"infra": "1 to change\n~ size"}),
    )
    assert env.render_status([lane]).splitlines() == [
        "production  checkout  2.2.0  live since 2026-12-02 10:14Z, approved by alice and bob, bundle 3f2a9c1b7d0e, "
        "revision 4",
        "  running: shop.checkout@2.3.0 (release)",
        "  queued: shop.checkout@rollback-1 (rollback by bob), shop.checkout@2.4.0",
        "  drift in 2.2.0 (checked 2026-12-02 10:14Z): infra: 1 to change",
        "    ~ size",
    ]
