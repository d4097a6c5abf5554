"""The attacks issue 9 closes, tried as an attacker would, end to end: each must fail, visibly.

Releases run through the real CLI (a subprocess) and the real worker on the session's
Temporal server; an attacker who bypasses the CLI starts the release workflow directly
with the client, as anyone with access to the namespace could.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.api.enums.v1 import EventType

from prodline.artifacts.bundle import bundle_key, pack, upload
from prodline.artifacts.store import open_store
from prodline.client import ReleaseClient
from prodline.config.release import BundleRef, EnvironmentRun, ReleaseRequest
from prodline.config.steps import Step

from conftest import (
    APP,
    Cli,
    ProjectFiles,
    approval_app,
    client_for,
    ledgers,
    run,
    service,
    step,
    wait_for,
    waiting_in,
)

DEPLOY = 'echo "original $PRODLINE_VERSION" >> "../deployed-$PRODLINE_ENVIRONMENT"\n'


def deploy_service(project: ProjectFiles, app: str = APP, head: str = "") -> Path:
    """A service whose one step records what it deployed in the test's folder."""
    return project(service(step("deploy", "./deploy.sh"), head=head), app=app, scripts={"deploy.sh": DEPLOY})


def read(cli: Cli, *args: str) -> Any:
    """A CLI command's --json answer."""
    result = cli.run(*args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def final_status(cli: Cli, release: str) -> dict[str, Any]:
    """The release's status once it has ended."""

    def ended() -> dict[str, Any] | None:
        status = read(cli, "release", "status", release)
        return status if status["state"] not in ("running", "waiting") else None

    return cast(dict[str, Any], wait_for(ended, timeout=60, what=f"{release} to end"))


def listed(cli: Cli, project: ProjectFiles, state: str) -> list[str]:
    """The project's releases that `release list --state STATE` shows."""
    rows = read(cli, "release", "list", "--application", project.application, "--state", state)
    return [row["release_id"] for row in rows]


# --- policy: the registered revision, never the local file ---------------------------------


def test_a_local_application_file_without_the_approval_does_not_remove_it(cli, worker, project, tmp_path, temporal):
    service_file = deploy_service(project, app=approval_app("{approvers: [alice]}"))
    cli.apply(project.root / "prodline.yaml")  # what the platform team registered
    cli.auto_apply = False
    deploy_service(project, app=APP)  # the releaser's copy: production's approval deleted

    release = project.release_id("1.0.0")
    started = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert started.returncode == 0, started.stderr
    notes = [line for line in started.stderr.splitlines() if "differs from" in line]
    assert len(notes) == 1, started.stderr
    assert f"{project.root / 'prodline.yaml'} differs from {project.application} revision 1" in notes[0]
    assert "(production: precondition approval removed)" in notes[0]  # says what the local copy lacks
    assert f"`prodline app diff {project.application} {project.root / 'prodline.yaml'}`" in notes[0]

    status = waiting_in(cli, release, "production", "approval")
    assert status["revision"] == 1
    assert (tmp_path / "deployed-staging").exists() and not (tmp_path / "deployed-production").exists()
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert final_status(cli, release)["state"] == "succeeded"
    assert (tmp_path / "deployed-production").read_text() == "original 1.0.0\n"


# --- code: the bundle packed at start, nothing edited later ----------------------------------


def test_a_script_edited_after_start_is_not_what_runs_and_the_ledger_pins_the_code(
    cli, worker, project, tmp_path, temporal, monkeypatch
):
    monkeypatch.setenv("CHECKOUT_TOKEN", "s3cr3t-token")  # on the (in-process) worker
    service_file = deploy_service(
        project,
        app=approval_app("{approvers: [alice]}"),
        head="parameters:\n  replicas: {type: int, default: 1}\n"
        "  token: {type: secret, from_env: CHECKOUT_TOKEN}\n"
        "environments:\n  production:\n    parameters: {replicas: 3}\n",
    )
    with pack(service_file.parent) as packed:
        started_with = packed.ref.digest  # the code as it was at `release start`
    release = project.release_id("1.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "1.0.0", "--wait")
    status = waiting_in(cli, release, "production", "approval")

    (service_file.parent / "deploy.sh").write_text('#!/bin/sh\necho edited >> "../deployed-$PRODLINE_ENVIRONMENT"\n')
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert waiting.wait(60) == 0, waiting.stdout.read()
    assert (tmp_path / "deployed-production").read_text() == "original 1.0.0\n"  # not "edited"

    assert status["bundle"] == started_with and status["revision"] == 1
    staging, production = ledgers(temporal, project)
    for records, replicas in ((staging, "1"), (production, "3")):
        assert [(r.bundle, r.revision, r.parameters) for r in records] == [
            (started_with, 1, {"replicas": replicas})
        ]  # the secret is neither among the recorded values nor anywhere in the record
        assert "s3cr3t-token" not in records[0].model_dump_json()


# --- a tampered bundle object ------------------------------------------------------------------


@pytest.mark.parametrize("record", ["replaced", "left"])
def test_a_tampered_bundle_object_is_refused_as_corrupt_at_once(
    cli, worker, project, tmp_path, temporal, monkeypatch, record
):
    service_file = deploy_service(project)
    first = cli.run("release", "start", str(service_file), "--version", "1.0.0", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    with pack(service_file.parent) as packed:
        ref = packed.ref

    tamper(ref, replace_record=record == "replaced")
    # The worker has never fetched this bundle: a fresh cache, as on a new machine.
    monkeypatch.setenv("PRODLINE_CACHE_DIR", str(tmp_path / "fresh-cache"))

    second = cli.run("release", "start", str(service_file), "--version", "1.0.1", "--wait", "--json")
    assert second.returncode == 1, second.stdout + second.stderr
    outcome = json.loads(second.stdout)
    assert outcome["state"] == "failed"
    assert f"bundle {ref.digest} in " in outcome["reason"] and " is corrupt: " in outcome["reason"]
    assert "evil" not in "".join(p.read_text() for p in tmp_path.glob("deployed-*"))
    assert attempts_of(temporal, project.release_id("1.0.1")) == [1]  # not retried: retrying cannot help
    _, production = ledgers(temporal, project)
    assert [r.version for r in production] == ["1.0.0"]


def tamper(ref: BundleRef, *, replace_record: bool) -> None:
    """Swap the stored bundle's code for code of the same size, as anyone with write access
    to the store (the bucket) could; with ``replace_record``, the store's own checksum
    record beside the object is rewritten to agree with the new bytes."""
    stored = Path(os.environ["PRODLINE_ARTIFACT_DIR"]) / bundle_key(ref)
    forged = stored.read_bytes().replace(b'echo "original', b'echo "evil!!!!')
    assert len(forged) == ref.size and forged != stored.read_bytes()
    stored.chmod(0o600)
    stored.write_bytes(forged)
    if replace_record:
        stored.with_name(f".{stored.name}.sha256").write_text(hashlib.sha256(forged).hexdigest())


def test_a_bundle_tampered_while_the_release_waits_fails_the_step_at_once(
    cli, worker, project, tmp_path, temporal, monkeypatch
):
    service_file = deploy_service(project, app=approval_app("{approvers: [alice]}"))
    release = project.release_id("1.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "1.0.0", "--wait", "--json")
    status = waiting_in(cli, release, "production", "approval")
    ref = BundleRef(digest=status["bundle"], size=bundle_size(service_file.parent))
    tamper(ref, replace_record=True)
    # Production's steps run on workers that have not fetched the bundle yet.
    monkeypatch.setenv("PRODLINE_CACHE_DIR", str(tmp_path / "production-cache"))
    assert cli.run("approve", release, "--as", "alice").returncode == 0

    assert waiting.wait(60) == 1
    outcome = json.loads(waiting.stdout.read())
    assert outcome["reason"].startswith(f"production: step deploy failed: bundle {ref.digest} in "), outcome["reason"]
    assert "is corrupt: its content hashes to sha256:" in outcome["reason"]
    assert not (tmp_path / "deployed-production").exists()
    assert step_attempts(temporal, release) == [1, 1]  # staging's apply, then production's one attempt


def bundle_size(folder: Path) -> int:
    with pack(folder) as packed:
        return packed.ref.size


def step_attempts(temporal, release: str) -> list[int]:
    """The attempt number of every step activity task the release started, in order (rules left out)."""

    async def read() -> list[int]:
        history = await (await client_for(temporal)).get_workflow_handle(release).fetch_history()
        kinds = {
            e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        return [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and kinds[e.activity_task_started_event_attributes.scheduled_event_id] != "prodline.evaluate_rule"
        ]

    return run(read())


LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the marker the SDK records for a local activity's result


def attempts_of(temporal, release: str) -> list[int]:
    """The attempt count of each local activity (the plan's resolution) the release recorded."""

    async def read() -> list[int]:
        history = await (await client_for(temporal)).get_workflow_handle(release).fetch_history()
        found = []
        for event in history.events:
            marker = event.marker_recorded_event_attributes
            if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and marker.marker_name == LOCAL_ACTIVITY_MARKER:
                found.append(json.loads(marker.details["data"].payloads[0].data)["attempt"])
        return found

    return run(read())


# --- bundles that leave their root ---------------------------------------------------------------


def test_a_symlink_leaving_the_bundle_root_is_refused_at_start(cli, worker, project, tmp_path):
    service_file = deploy_service(project)
    cli.apply(project.root / "prodline.yaml")  # before the link: the application's own bundle holds svc/
    cli.auto_apply = False
    (tmp_path / "credentials").write_text("secret")
    (service_file.parent / "creds").symlink_to(tmp_path / "credentials")
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{service_file.parent / 'creds'} is a symbolic link to the absolute path" in result.stderr
    assert "Traceback" not in result.stderr

    (service_file.parent / "creds").unlink()
    (service_file.parent / "creds").symlink_to("../credentials")
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{service_file.parent / 'creds'} is a symbolic link to ../credentials, which leaves" in result.stderr
    assert not list(tmp_path.glob("deployed-*"))


def test_a_bundle_root_that_does_not_hold_the_service_file_is_refused_at_start(cli, worker, project, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    service_file = deploy_service(project, head="bundle: {root: ../elsewhere}\n")
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert result.returncode == 2, result.stdout + result.stderr
    line = next(line for line in result.stderr.splitlines() if "bundle.root" in line)
    assert line.startswith(f"prodline: error: {service_file}:3: bundle.root: ")
    assert f"{tmp_path / 'elsewhere'} does not contain the service file" in line


def test_an_unregistered_application_is_refused_at_start(cli, worker, project, tmp_path):
    cli.auto_apply = False
    service_file = deploy_service(project)
    result = cli.run("release", "start", str(service_file), "--version", "1.0.0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if "`prodline app apply" in line] == [
        f"prodline: error: application {project.application!r} is not registered in Temporal; the platform team registers "
        f"it with `prodline app apply prodline.yaml` (service file {service_file})"
    ]
    assert cli.run("release", "status", project.release_id("1.0.0")).returncode == 7  # nothing was started


# --- an attacker who bypasses the CLI ------------------------------------------------------------


def start_directly(temporal, task_queue: str, folder: Path, request: dict) -> str:
    """Pack and upload ``folder`` and start the release workflow with the client: no CLI checks."""
    with pack(folder) as packed:
        upload(packed, open_store())
        ref = packed.ref
    full = ReleaseRequest.model_validate(
        {"service": "checkout", "initiator": "mallory", "bundle": ref, "service_file": "prodline.service.yaml"}
        | request
    )

    async def start() -> str:
        return (await ReleaseClient(await client_for(temporal), task_queue).start(full)).release_id

    return run(start())


def test_a_service_file_in_the_bundle_that_does_not_validate_fails_with_located_errors(
    cli, worker, project, tmp_path, temporal, task_queue
):
    service_file = deploy_service(project)
    cli.apply(project.root / "prodline.yaml")
    # What `release start` would never let through: an environment the registered
    # application does not have, and a skipped step the service does not have.
    text = service_file.read_text() + "environments:\n  canary: {}\n  production:\n    skip: [migrate]\n"
    service_file.write_text(text)
    lines = text.splitlines()
    canary, skip = lines.index("  canary: {}") + 1, lines.index("    skip: [migrate]") + 1

    release = start_directly(
        temporal, task_queue, service_file.parent, {"application": project.application, "version": "1.0.0"}
    )
    status = final_status(cli, release)
    assert status["state"] == "failed"
    reason = status["reason"]
    assert "the service file in bundle sha256:" in reason, reason
    assert f"does not validate against {project.application} revision 1:" in reason
    assert f"  prodline.service.yaml:{canary}: environments.canary: no environment 'canary' in application" in reason
    assert f"  prodline.service.yaml:{skip}: environments.production.skip.migrate: no step named 'migrate'" in reason
    assert not list(tmp_path.glob("deployed-*"))


def test_a_release_refused_before_it_starts_ends_failed_in_its_status_events_and_the_list(
    cli, worker, project, temporal, task_queue
):
    # A refusal at resolve (a broken service file, a corrupt bundle, an unregistered
    # application) must end the release like any failure: its reason says it could not
    # start, its events say it failed, and `release list --state failed` finds it.
    service_file = deploy_service(project)
    cli.apply(project.root / "prodline.yaml")
    service_file.write_text(service_file.read_text() + "environments:\n  canary: {}\n")
    release = start_directly(
        temporal, task_queue, service_file.parent, {"application": project.application, "version": "1.0.0"}
    )
    status = final_status(cli, release)
    assert status["state"] == "failed"
    assert status["reason"].startswith("the release cannot start: the service file in bundle "), status["reason"]
    assert status["events"][-1]["message"].startswith("release failed: the release cannot start: ")
    assert listed(cli, project, "running") == []
    assert listed(cli, project, "failed") == [release]


def test_rules_sent_in_the_request_are_ignored_for_the_registered_ones(
    cli, worker, project, tmp_path, temporal, task_queue
):
    service_file = deploy_service(project, app=approval_app("{approvers: [alice]}"))
    cli.apply(project.root / "prodline.yaml")
    # The legacy fields: environments with their steps and rules, resolved by the sender.
    forged_step = Step.model_validate({"name": "deploy", "command": {"apply": f"echo forged >> {tmp_path}/forged"}})
    forged = [EnvironmentRun(name=name, steps=[forged_step]) for name in ("staging", "production")]
    release = start_directly(
        temporal,
        task_queue,
        service_file.parent,
        {"application": project.application, "version": "1.0.0", "environments": forged, "service_dir": "/"},
    )
    status = waiting_in(cli, release, "production", "approval")
    assert status["revision"] == 1
    assert (tmp_path / "deployed-staging").read_text() == "original 1.0.0\n"
    assert not (tmp_path / "forged").exists() and not (tmp_path / "deployed-production").exists()
    assert cli.run("approve", release, "--as", "alice").returncode == 0
    assert final_status(cli, release)["state"] == "succeeded"
    assert not (tmp_path / "forged").exists()


def test_a_direct_start_for_an_unregistered_application_fails_naming_app_apply(
    cli, worker, project, temporal, task_queue
):
    service_file = deploy_service(project)  # never registered
    release = start_directly(
        temporal, task_queue, service_file.parent, {"application": project.application, "version": "1.0.0"}
    )
    status = final_status(cli, release)
    assert status["state"] == "failed"
    assert status["reason"].endswith(
        f"application {project.application!r} is not registered in Temporal: "
        "the platform team registers it with `prodline app apply prodline.yaml`"
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"service_file": "../../prodline.service.yaml"}, "is not a path inside the bundle"),
        ({"service_file": "/etc/hostname"}, "is not a path inside the bundle"),
        ({"service_file": "deploy.sh"}, "deploy.sh:2: not a prodline file"),
        ({"service": "payments"}, "prodline.service.yaml in the bundle is service 'checkout', not 'payments'"),
        ({"bundle": None}, "the release names no bundle"),
    ],
    ids=["dotdot", "absolute", "not-a-service-file", "another-service", "no-bundle"],
)
def test_a_direct_start_that_does_not_name_the_bundles_own_service_file_is_refused(
    cli, worker, project, tmp_path, temporal, task_queue, fields, reason
):
    service_file = deploy_service(project)
    cli.apply(project.root / "prodline.yaml")
    # The legacy fields as an old client would send them: with no bundle, the code at this path.
    legacy = {"service_dir": str(service_file.parent), "application_dir": str(project.root)}
    release = start_directly(
        temporal,
        task_queue,
        service_file.parent,
        {"application": project.application, "version": "1.0.0", **legacy, **fields},
    )
    status = final_status(cli, release)
    assert status["state"] == "failed"
    assert reason in status["reason"], status["reason"]
    assert not list(tmp_path.glob("deployed-*"))
