"""Who may change the rules: applies admitted by the admin keys the workers are deployed with.

The registry worker runs in this test process, so a test configures its admin keys by
setting PRODLINE_ADMIN_KEYS here (the worker reads the file at every apply). Each test
registers its own application; the CLI runs as a subprocess, as an admin's laptop would.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from prodline.activities.admins import ADMIN_KEYS_VARIABLE, describe_admin_keys
from prodline.config.loader import load_application_text
from prodline.config.release import revision_digest
from prodline.contracts import APPLY_REFUSED, APPLY_UPDATE, ApplicationChange, Applied, application_id
from prodline.identity.documents import ApplyDocument, Signed
from prodline.identity.signing import generate, sign
from prodline.workflows.application import ApplicationRun, ApplicationWorkflow

from conftest import REGISTRY_QUEUE, WorkerThread, client_for, run


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    made = {}
    for name in ("root", "intruder"):
        made[name] = tmp_path / "keys" / name
        made[name].parent.mkdir(exist_ok=True)
        generate(made[name], f"{name}@ops")
    return made


@pytest.fixture
def admin_keys(tmp_path, keys, monkeypatch) -> Path:
    """The workers trust `root` (the file an ops team deploys them with)."""
    allowed = tmp_path / "admins"
    allowed.write_text(f'root namespaces="prodline" {keys["root"].with_suffix(".pub").read_text()}')
    monkeypatch.setenv(ADMIN_KEYS_VARIABLE, str(allowed))
    return allowed


def app_file(tmp_path: Path, name: str, approvers: str = "[alice]") -> Path:
    path = tmp_path / name / "prodline.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"application: {name}\nenvironments:\n  - name: staging\n  - name: production\n"
        f"    preconditions:\n      - approval: {{approvers: {approvers}}}\n"
    )
    return path


def apply(cli, path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**cli.env, "PRODLINE_TASK_QUEUE": REGISTRY_QUEUE, "PRODLINE_USER": "platform-team"}
    return subprocess.run(cli.argv("app", "apply", str(path), *args), env=env, capture_output=True, text=True)


def shown(cli, name: str) -> str:
    result = cli.run("app", "show", name)
    return result.stdout + result.stderr


def test_without_admin_keys_on_the_workers_an_unsigned_apply_is_accepted(cli, tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_KEYS_VARIABLE, raising=False)
    name = f"open-{uuid.uuid4().hex[:6]}"
    result = apply(cli, app_file(tmp_path, name))
    assert result.returncode == 0, result.stderr
    assert "revision 1" in shown(cli, name)


def test_with_admin_keys_an_unsigned_or_stranger_signed_apply_is_refused_and_an_admin_signed_one_counts(
    cli, tmp_path, keys, admin_keys, temporal
):
    name = f"locked-{uuid.uuid4().hex[:6]}"
    path = app_file(tmp_path, name)
    unsigned = apply(cli, path)
    assert unsigned.returncode == 8, unsigned.stdout + unsigned.stderr
    assert "app apply refused: the workers accept only applies signed by an admin key" in unsigned.stderr
    stranger = apply(cli, path, "--key", str(keys["intruder"]))
    assert stranger.returncode == 8 and "is not enrolled" in stranger.stderr
    assert cli.run("app", "show", name).returncode == 7  # nothing was registered, not even half

    admin = apply(cli, path, "--key", str(keys["root"]))
    assert admin.returncode == 0, admin.stdout + admin.stderr
    revision = shown(cli, name)
    assert "signed   by root [ssh SHA256:" in revision
    assert "by root\n" in revision and "platform-team" not in revision  # who signed, not the name asserted

    # Both refusals are in the application's history, as failed updates with their reasons.
    async def refusals() -> list[str]:
        client = await client_for(temporal)
        history = await client.get_workflow_handle(application_id(name)).fetch_history()
        done = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED]
        return [
            e.workflow_execution_update_completed_event_attributes.outcome.failure.message
            for e in done
            if e.workflow_execution_update_completed_event_attributes.outcome.HasField("failure")
        ]

    reasons = run(refusals())
    assert len(reasons) == 2 and "signed by an admin key" in reasons[0] and "is not enrolled" in reasons[1]


def change_of(name: str, text: str, key: Path | None = None, replaces: int = 0) -> ApplicationChange:
    """An apply as `prodline app apply` sends it (no bundle), signed with ``key`` when given."""
    signed = None
    if key is not None:
        app, _ = load_application_text(text, "prodline.yaml")
        document = ApplyDocument.issue(
            now=datetime.now(UTC), application=name, digest=revision_digest(app, None), replaces=replaces
        )
        signed = Signed(document=document.text(), signature=sign(document.text(), key))
    return ApplicationChange(source=text, path="prodline.yaml", applied_by="root", signed=signed)


def send(temporal, name: str, change: ApplicationChange, queue: str = REGISTRY_QUEUE) -> Applied:
    """The apply Update, starting the application's workflow on ``queue`` the first time."""

    async def go() -> Applied:
        client = await client_for(temporal)
        start = WithStartWorkflowOperation(
            ApplicationWorkflow.run,
            ApplicationRun(),
            id=application_id(name),
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await client.execute_update_with_start_workflow(
            APPLY_UPDATE, change, start_workflow_operation=start, result_type=Applied
        )

    return run(go())


def refusal(temporal, name: str, change: ApplicationChange, queue: str = REGISTRY_QUEUE) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        send(temporal, name, change, queue)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == APPLY_REFUSED
    return cause.message


def test_an_old_signed_apply_replayed_later_cannot_roll_the_rules_back(cli, tmp_path, keys, admin_keys, temporal):
    """An admin signed revision 1 (approvals by alice); after revision 2 (alice and bob), someone
    who kept revision 1's signed change sends it again, to get the laxer rules back."""
    name = f"replay-{uuid.uuid4().hex[:6]}"
    first_text = app_file(tmp_path, name).read_text()
    second_text = first_text.replace("[alice]", "[alice, bob], min_approvers: 2")
    first = change_of(name, first_text, keys["root"], replaces=0)
    assert send(temporal, name, first).revision.number == 1
    assert send(temporal, name, change_of(name, second_text, keys["root"], replaces=1)).revision.number == 2
    assert "replaces revision 0, but revision 2 is current" in refusal(temporal, name, first)
    current = shown(cli, name)
    assert "revision 2" in current and "min_approvers: 2" in current


def test_a_control_worker_without_admin_keys_cannot_admit_what_signed_revisions_came_before(
    tmp_path, keys, admin_keys, temporal, monkeypatch
):
    name = f"closed-{uuid.uuid4().hex[:6]}"
    text = app_file(tmp_path, name).read_text()
    assert send(temporal, name, change_of(name, text, keys["root"])).revision.signed_by.startswith("root [ssh")
    monkeypatch.delenv(ADMIN_KEYS_VARIABLE)  # a control worker deployed without the file takes the next apply
    reason = refusal(temporal, name, change_of(name, text.replace("[alice]", "[mallory]")))
    assert "earlier revisions were signed by an admin" in reason


def test_an_application_registered_before_admin_keys_refuses_unsigned_applies_after_the_upgrade(
    tmp_path, keys, admin_keys, temporal, monkeypatch
):
    """Its workflow's history holds applies from before admission existed; once the workers are
    upgraded and given admin keys, the next (live) apply must be admitted, even though replaying
    the old ones decides, for them, that there was no admission."""
    name = f"upgraded-{uuid.uuid4().hex[:6]}"
    queue = f"upgrade-{uuid.uuid4().hex[:6]}"
    text = app_file(tmp_path, name).read_text()

    async def old_code_applies() -> None:
        # The code before admission: no patch check, no admission activity.
        async def admitted_by_nobody(self, change, digest, replaces):
            return ""

        with monkeypatch.context() as patch:
            patch.setattr(ApplicationWorkflow, "_admit", admitted_by_nobody)
            client = await client_for(temporal)
            async with Worker(
                client, task_queue=queue, workflows=[ApplicationWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
            ):
                start = WithStartWorkflowOperation(
                    ApplicationWorkflow.run, ApplicationRun(), id=application_id(name), task_queue=queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )  # fmt: skip
                await client.execute_update_with_start_workflow(
                    APPLY_UPDATE, change_of(name, text), start_workflow_operation=start, result_type=Applied
                )

    run(old_code_applies())
    upgraded = WorkerThread(temporal.address, queue).start()  # today's worker: replays the old apply first
    try:
        reason = refusal(temporal, name, change_of(name, text.replace("[alice]", "[mallory]")), queue)
    finally:
        upgraded.stop()
    assert "accept only applies signed by an admin key" in reason


def test_an_admin_keys_file_that_enrols_nobody_for_prodline_refuses_every_apply(cli, tmp_path, keys, monkeypatch):
    allowed = tmp_path / "git-signers"
    allowed.write_text(f'root namespaces="git" {keys["root"].with_suffix(".pub").read_text()}')
    monkeypatch.setenv(ADMIN_KEYS_VARIABLE, str(allowed))
    result = apply(cli, app_file(tmp_path, f"git-{uuid.uuid4().hex[:6]}"), "--key", str(keys["root"]))
    assert result.returncode == 8 and "enrols no key for prodline" in result.stderr


def test_a_starting_worker_says_what_admin_keys_it_holds(tmp_path, keys, monkeypatch):
    monkeypatch.delenv(ADMIN_KEYS_VARIABLE, raising=False)
    assert describe_admin_keys().startswith("none")
    allowed = tmp_path / "admins"
    allowed.write_text(f'root namespaces="prodline" {keys["root"].with_suffix(".pub").read_text()}')
    monkeypatch.setenv(ADMIN_KEYS_VARIABLE, str(allowed))
    assert describe_admin_keys() == f"1 key(s) of root from {allowed}"
    allowed.write_text("root namespaces=prodline ssh-ed25519 not-base64\n")
    assert describe_admin_keys().startswith("UNUSABLE, every apply will be refused:")
