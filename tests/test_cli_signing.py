"""The client side of signed decisions: what `approve`, `release start` and `app apply` sign and send.

The CLI runs as a subprocess, at a terminal (a pty) or not, against the real worker. What
it sent is read back from the workflow's history: decisions are Updates, and a signature
names exactly the status the approver was shown. Whether the engine then counts a
signature is the workflow's business (tests/workflow); here it is checked with
``ssh-keygen -Y check-novalidate``, which knows nothing of prodline.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from prodline.client import ReleaseClient
from prodline.contracts import Verdict
from prodline.errors import WrongState

from conftest import Cli, approval_app, client_for, run, service, step, wait_for, waiting_in

UPDATE_ACCEPTED = "workflow_execution_update_accepted_event_attributes"
UPDATE_COMPLETED = "workflow_execution_update_completed_event_attributes"
SIGNALED = "workflow_execution_signaled_event_attributes"


def keypair(folder: Path, name: str, passphrase: str = "") -> Path:
    """A new ed25519 key made by ssh-keygen, as a person makes theirs; returns the private key's path."""
    key = folder / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(key)], check=True)
    return key


def public(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


def fingerprint(key: Path) -> str:
    return subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def events(temporal, workflow_id: str) -> list:
    async def fetch() -> list:
        client = await client_for(temporal)
        return list((await client.get_workflow_handle(workflow_id).fetch_history()).events)

    return run(fetch())


def kinds(temporal, workflow_id: str) -> list[str]:
    return [e.WhichOneof("attributes") for e in events(temporal, workflow_id)]


def update_inputs(temporal, workflow_id: str) -> list[dict]:
    """What each Update the workflow accepted carried, decoded (JSON payloads)."""
    return [
        json.loads(e.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads[0].data)
        for e in events(temporal, workflow_id)
        if e.HasField(UPDATE_ACCEPTED)
    ]


def start_input(temporal, workflow_id: str) -> dict:
    first = events(temporal, workflow_id)[0]
    return json.loads(first.workflow_execution_started_event_attributes.input.payloads[0].data)


def check_signature(signed: dict, folder: Path) -> subprocess.CompletedProcess:
    """ssh-keygen's own check of a signature over the document's exact text, in the prodline namespace."""
    signature = folder / "decision.sig"
    signature.write_text(signed["signature"])
    return subprocess.run(
        ["ssh-keygen", "-Y", "check-novalidate", "-n", "prodline", "-s", str(signature)],
        input=signed["document"].encode(),
        capture_output=True,
    )


def in_terminal(cli: Cli, *args: str, answer: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with a terminal (a pty) as stdin and stdout; type ``answer`` when it asks.

    Its own session, so it has no controlling terminal: a passphrase could not be asked for.
    """
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        cli.argv(*args), env=cli.env, stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True
    )
    os.close(secondary)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: the CLI has exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if answer is not None and not answered and b"[y/N]" in output:
                os.write(primary, answer.encode() + b"\n")
                answered = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    return code, output.decode(errors="replace").replace("\r\n", "\n")


def piped(cli: Cli, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI as a script runs it: no terminal anywhere (stdin closed, output captured, no controlling tty)."""
    return subprocess.run(
        cli.argv(*args),
        env=env or cli.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


# --- asking at a terminal, never in a script --------------------------------------------------


def test_at_a_terminal_the_approver_confirms_and_a_no_sends_nothing(cli, worker, project, temporal):
    service_file = project(
        service(step("deploy", "true", ", plan: 'echo would deploy 3 pods'")),
        app=approval_app("{approvers: [alice, bob, carol], min_approvers: 3}"),
    )
    release = project.release_id("5.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "5.0.0", "--wait")
    waiting_in(cli, release, "production", "0/3 approvals")

    code, shown = in_terminal(cli, "approve", release, "--as", "alice", answer="n")
    assert code == 1, shown
    assert f"approve {release} in production? [y/N]" in shown and "nothing sent" in shown
    # What is being decided came before the question: the plan, and what it waits on.
    assert shown.index("plan of deploy") < shown.index("[y/N]")
    assert "would deploy 3 pods" in shown and "0/3 approvals" in shown
    assert UPDATE_ACCEPTED not in kinds(temporal, release)  # nothing reached the release
    waiting_in(cli, release, "production", "0/3 approvals")

    # --yes at a terminal, and a script without a terminal, are never asked.
    code, shown = in_terminal(cli, "approve", release, "--as", "bob", "--yes")
    assert code == 0 and "[y/N]" not in shown and "approve by bob counted" in shown, shown
    scripted = piped(cli, "approve", release, "--as", "carol")
    assert scripted.returncode == 0, scripted.stdout + scripted.stderr
    assert "[y/N]" not in scripted.stdout and "approve by carol counted" in scripted.stdout
    # A yes at the terminal sends it; the gate was met by the third approval.
    waiting_in(cli, release, "production", "2/3 approvals")
    code, shown = in_terminal(cli, "approve", release, "--as", "alice", answer="y")
    assert code == 0 and "approve by alice counted: production" in shown, shown
    assert waiting.wait(60) == 0

    history = kinds(temporal, release)
    assert history.count(UPDATE_ACCEPTED) == 3 and history.count(UPDATE_COMPLETED) == 3
    # No decision came as a signal: the only signals are the ledgers' answers about lanes.
    assert {
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in events(temporal, release)
        if e.HasField(SIGNALED)
    } == {"turn"}
    assert [d["by"] for d in update_inputs(temporal, release)] == ["bob", "carol", "alice"]


def test_json_output_is_the_verdict_and_never_asks(cli, worker, project):
    service_file = project(service(step("deploy", "true")), app=approval_app("{approvers: [alice]}"))
    release = project.release_id("5.0.1")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "5.0.1", "--wait")
    waiting_in(cli, release, "production")
    code, shown = in_terminal(cli, "reject", release, "--as", "alice", "--comment", "not today", "--json")
    assert code == 0 and "[y/N]" not in shown, shown
    record = json.loads(shown.strip().splitlines()[-1])
    assert record["verdict"] == "reject" and record["accepted"] is True and record["comment"] == "not today"
    assert waiting.wait(60) == 3


# --- what a signed decision names ---------------------------------------------------------------


def signed_app(*people: tuple[str, Path], rule: str = "{approvers: [alice]}") -> str:
    """Staging, then production taking signed decisions only, from these people's keys."""
    enrolled = "".join(f"  {name}: '{public(key)}'\n" for name, key in people)
    return (
        f"application: shop\npeople:\n{enrolled}environments:\n  - name: staging\n  - name: production\n"
        f"    verify: ssh\n    preconditions:\n      - approval: {rule}\n"
    )


def test_a_signed_approval_names_exactly_the_status_it_showed(cli, worker, project, temporal, tmp_path):
    alice = keypair(tmp_path, "alice")
    service_file = project(service(step("deploy", "true", ", plan: 'echo plan-v1'")), app=signed_app(("alice", alice)))
    release = project.release_id("5.1.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "5.1.0", "--wait")
    shown = waiting_in(cli, release, "production")

    result = piped(
        cli, "approve", release, "--key", str(alice), "--as", "alice", "--comment", "ship it", "--valid-for", "5m"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"approve by alice (ssh {fingerprint(alice)}) counted: production" in result.stdout
    # The prompt showed the pinned revision, the bundle and the plan's digest, shortened.
    production = next(e for e in shown["environments"] if e["name"] == "production")
    plan_digest = production["steps"][0]["plan_digest"]
    assert plan_digest, "the status names the plan's digest"
    assert production["gate"] == "1: precondition approval"  # which gate the signature is for
    assert f"revision {shown['revision']} (digest {shown['revision_digest'].removeprefix('sha256:')[:12]})" in (
        result.stdout
    )
    assert f"deploys bundle {shown['bundle'].removeprefix('sha256:')[:12]}" in result.stdout
    assert f"plan of deploy [plan {plan_digest.removeprefix('sha256:')[:12]}]" in result.stdout
    assert waiting.wait(60) == 0

    [sent] = update_inputs(temporal, release)
    document = json.loads(sent["signed"]["document"])
    assert document == {
        "kind": "prodline.decision/v1",
        "by": "alice",
        "issued_at": document["issued_at"],
        "expires_at": document["expires_at"],
        "release": release,
        "run": shown["original_run_id"],
        "environment": "production",
        "gate": production["gate"],
        "verdict": "approve",
        "comment": "ship it",
        "plans": {"deploy": plan_digest},
        "bundle": shown["bundle"],
        "revision": shown["revision"],
        "revision_digest": shown["revision_digest"],
    }
    issued, expires = (datetime.fromisoformat(document[k]) for k in ("issued_at", "expires_at"))
    assert expires - issued == timedelta(minutes=5)
    assert sent["by"] == "alice" and sent["environment"] == "production" and sent["comment"] == "ship it"
    checked = check_signature(sent["signed"], tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert b"BEGIN OPENSSH PRIVATE KEY" not in json.dumps(sent).encode()  # only the public half travels


def test_unusable_keys_and_validities_exit_2_and_send_nothing(cli, worker, project, temporal, tmp_path):
    alice = keypair(tmp_path, "alice")
    locked = keypair(tmp_path, "locked", passphrase="correct horse")
    service_file = project(service(step("deploy", "true")), app=approval_app("{approvers: [alice]}"))
    release = project.release_id("5.2.0")
    cli.spawn("release", "start", str(service_file), "--version", "5.2.0", "--wait")
    waiting_in(cli, release, "production")
    unreadable = tmp_path / "unreadable"
    unreadable.write_text("x")
    unreadable.chmod(0)

    cases = {
        "--key": ("--key", str(tmp_path / "missing")),
        "unreadable": ("--key", str(unreadable)),
        "--valid-for": ("--key", str(alice), "--valid-for", "25h"),
        "not a duration": ("--key", str(alice), "--valid-for", "soon"),
        "passphrase": ("--key", str(locked)),
        "without a key": ("--valid-for", "5m"),
    }
    if os.geteuid() == 0:  # root reads any file
        del cases["unreadable"]
    for what, flags in cases.items():
        result = piped(cli, "approve", release, "--as", "alice", *flags)
        assert result.returncode == 2, (what, result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()  # one line, never a traceback
        assert "--key" in line or "--valid-for" in line, (what, line)
    assert "passphrase" in piped(cli, "approve", release, "--key", str(locked)).stderr
    assert "longer than 24h" in piped(cli, "approve", release, "--key", str(alice), "--valid-for", "25h").stderr
    assert UPDATE_ACCEPTED not in kinds(temporal, release)

    # The same checks before a start or an apply: nothing is packed, uploaded or started.
    missing = str(tmp_path / "missing")
    start = piped(cli, "release", "start", str(service_file), "--version", "5.2.1", "--key", missing)
    assert start.returncode == 2 and "--key" in start.stderr and "no such file" in start.stderr, start.stderr
    apply = piped(cli, "app", "apply", str(project.root / "prodline.yaml"), "--key", missing)
    assert apply.returncode == 2 and "--key" in apply.stderr, apply.stderr
    assert cli.run("release", "status", project.release_id("5.2.1")).returncode == 7


# --- signed starts and applies ------------------------------------------------------------------


def test_a_signed_start_names_the_release_its_bundle_and_parameters(cli, worker, project, temporal, tmp_path):
    alice = keypair(tmp_path, "alice")
    head = "parameters:\n  replicas: {type: int, default: 1}\n"
    service_file = project(service(step("deploy", "true"), head=head), app=signed_app(("alice", alice)))
    release = project.release_id("5.3.0")
    result = cli.run(
        "release", "start", str(service_file), "--version", "5.3.0", "--param", "replicas=3",
        "--key", str(alice), "--initiator", "alice",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    request = start_input(temporal, release)
    document = json.loads(request["signed"]["document"])
    assert {k: v for k, v in document.items() if k not in ("issued_at", "expires_at")} == {
        "kind": "prodline.start/v1",
        "by": "alice",
        "release": release,
        "application": project.application,
        "service": "checkout",
        "version": "5.3.0",
        "bundle": request["bundle"]["digest"],
        "service_file": request["service_file"],  # inside the bundle
        "parameters": {"replicas": "3"},
        "reason": "",  # a rollback's (`prodline rollback --key`)
    }
    issued, expires = (datetime.fromisoformat(document[k]) for k in ("issued_at", "expires_at"))
    assert expires - issued == timedelta(minutes=15)  # the default
    assert request["service_file"] == "prodline.service.yaml"
    assert check_signature(request["signed"], tmp_path).returncode == 0
    # Without --key, nothing is signed.
    unsigned = cli.run("release", "start", str(service_file), "--version", "5.3.1")
    assert unsigned.returncode == 0, unsigned.stderr
    assert start_input(temporal, project.release_id("5.3.1"))["signed"] is None
    for version in ("5.3.0", "5.3.1"):
        cli.run("release", "cancel", project.release_id(version))


@pytest.fixture
def admin_worker(cli, tmp_path, task_queue):
    """`prodline worker` on a queue of its own, deployed with one admin key (PRODLINE_ADMIN_KEYS)."""
    admin = keypair(tmp_path, "admin")
    signers = tmp_path / "admins"
    signers.write_text(f'admin namespaces="prodline" {public(admin)}\n')
    queue = f"{task_queue}-admin"
    env = {**cli.env, "PRODLINE_TASK_QUEUE": queue, "PRODLINE_ADMIN_KEYS": str(signers)}
    process = cli.worker(env)
    yield admin, env
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def test_app_apply_signs_the_digest_the_workflow_registers_and_a_refusal_exits_8(
    cli, admin_worker, project, temporal, tmp_path
):
    admin, env = admin_worker
    project(service(step("deploy", "true")), app=approval_app())
    app_file = project.root / "prodline.yaml"

    def apply(*args: str) -> subprocess.CompletedProcess:
        return piped(cli, "app", "apply", str(app_file), *args, env={**env, "PRODLINE_USER": "admin"})

    # The worker is a process of its own: once it polls, an unsigned apply is refused, and says why.
    unsigned = wait_for(lambda: (r := apply()).returncode != 6 and r, timeout=60, what="the admin worker")
    assert isinstance(unsigned, subprocess.CompletedProcess)
    assert unsigned.returncode == 8, unsigned.stdout + unsigned.stderr
    assert "app apply refused:" in unsigned.stderr and "--key" in unsigned.stderr
    assert "Traceback" not in unsigned.stderr

    first = apply("--key", str(admin))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "revision 1 registered" in first.stdout and "signed by admin" in first.stdout
    app_file.write_text(app_file.read_text().replace("[alice]", "[alice, bob]"))
    second = apply("--key", str(admin), "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    registered = [json.loads(line) for line in (first.stdout, second.stdout) if line.startswith("{")]

    workflow_id = f"application:{project.application}"
    signed = [change["signed"] for change in update_inputs(temporal, workflow_id) if change.get("signed")]
    documents = [json.loads(s["document"]) for s in signed]
    # Each names the digest the workflow registered, and the revision it replaces (one step only);
    # not who PRODLINE_USER says the admin is: the key's owner signed.
    assert [(d["application"], d["replaces"], d["by"]) for d in documents] == [
        (project.application, 0, ""),
        (project.application, 1, ""),
    ]
    assert documents[1]["digest"] == registered[-1]["revision"]["digest"]
    shown = piped(cli, "app", "show", project.application, "--revision", "1", "--json", env=env)
    assert documents[0]["digest"] == json.loads(shown.stdout)["digest"]
    assert all(check_signature(s, tmp_path).returncode == 0 for s in signed)


def test_a_decision_on_a_release_that_ended_meanwhile_says_how_it_ended(cli, worker, project, temporal):
    service_file = project(service(step("deploy", "true")), app=approval_app("{approvers: [alice]}"))
    release = project.release_id("5.4.0")
    cli.spawn("release", "start", str(service_file), "--version", "5.4.0")
    waiting_in(cli, release, "production")

    async def decide_after_cancel() -> str:
        client = ReleaseClient(await client_for(temporal), cli.env["PRODLINE_TASK_QUEUE"])
        target = await client.decision_target(release)  # what the approver was shown...
        assert cli.run("release", "cancel", release, "--wait").returncode == 0  # ...then it ended
        with pytest.raises(WrongState) as refused:
            await client.decide(target, Verdict.approve, by="alice")
        return str(refused.value)

    assert run(decide_after_cancel()) == f"release {release} already cancelled; there is nothing to decide"


def test_end_to_end_a_signed_start_and_signed_approvals_where_a_forged_initiator_gains_nothing(
    cli, worker, project, tmp_path
):
    alice, bob = keypair(tmp_path, "alice"), keypair(tmp_path, "bob")
    app = signed_app(("alice", alice), ("bob", bob), rule="{approvers: [alice, bob], forbid_initiator: true}")
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')),
        app=app.replace("application:", "signed_starts: true\napplication:", 1),
    )
    release = project.release_id("5.5.0")
    unsigned = cli.run("release", "start", str(service_file), "--version", "5.5.0")
    assert unsigned.returncode == 2 and "requires signed starts: add --key" in unsigned.stderr, unsigned.stderr
    forged = cli.run(
        "release", "start", str(service_file), "--version", "5.5.0", "--key", str(alice), "--initiator", "bob"
    )
    assert forged.returncode == 2 and "--initiator bob, but --key" in forged.stderr and "is alice's" in forged.stderr
    stranger = cli.run(
        "release", "start", str(service_file), "--version", "5.5.0", "--key", str(keypair(tmp_path, "mallory"))
    )  # fmt: skip
    assert stranger.returncode == 2 and "this key is not enrolled under `people`" in stranger.stderr
    assert cli.run("release", "status", release).returncode == 7  # nothing was started

    # alice starts it, signed: the initiator is the key's owner, whatever name the CLI asserts.
    waiting = cli.spawn(
        "release", "start", str(service_file), "--version", "5.5.0", "--key", str(alice), "--wait"
    )  # fmt: skip
    status = waiting_in(cli, release, "production", "0/1 approvals")
    assert status["initiator"] == "alice" and status["initiator_verified"].startswith("ssh SHA256:")
    own = piped(cli, "approve", release, "--key", str(alice))
    assert own.returncode == 8 and "alice started this release and may not approve it" in own.stdout, own.stdout
    assert not (tmp_path / "deployed-production").exists()
    counted = piped(cli, "approve", release, "--key", str(bob), "--comment", "looks right")
    assert counted.returncode == 0 and f"approve by bob (ssh {fingerprint(bob)}) counted" in counted.stdout
    assert waiting.wait(60) == 0, waiting.stdout.read() if waiting.stdout else ""
    assert (tmp_path / "deployed-production").exists()
