"""Freezes, unfreezes and rollbacks where signatures are required: each tried as an attack.

Where an environment says ``verify: ssh``, a freeze or an unfreeze that touches it is
signed (a FreezeDocument), and in an application with ``signed_starts`` a rollback's start
is signed (a StartDocument naming the rollback and its reason). Each test sends what an
attacker could (no signature, a forged name, another order's signature, a replayed one, a
key nobody enrolled) and checks it is refused, changes nothing, and stays in history.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from test_cli_signing import events, fingerprint, keypair, public

from prodline.client.applications import ApplicationClient
from prodline.client.signatures import Signer
from prodline.config.freezes import FREEZE_UPDATE, UNFREEZE_UPDATE, FreezeOrder, UnfreezeOrder
from prodline.contracts import ApplicationChange, application_id
from prodline.identity.documents import FreezeDocument

from conftest import client_for, final_state, run, service, step

UPDATE_COMPLETED = "workflow_execution_update_completed_event_attributes"


def signed_app(name: str, people: dict[str, object], head: str = "") -> str:
    enrolled = "".join(f"  {who}: '{public(key)}'\n" for who, key in people.items())  # type: ignore[arg-type]
    return (
        f"application: {name}\n{head}people:\n{enrolled}environments:\n"
        "  - name: staging\n  - name: production\n    verify: ssh\n"
    )


@pytest.fixture
def name() -> str:
    return f"shop-{uuid.uuid4().hex[:6]}"


def refusals(temporal, workflow_id: str) -> list[str]:
    """The failure messages of the updates the workflow refused after accepting them (in history)."""
    return [
        e.workflow_execution_update_completed_event_attributes.outcome.failure.message
        for e in events(temporal, workflow_id)
        if e.WhichOneof("attributes") == UPDATE_COMPLETED
        and e.workflow_execution_update_completed_event_attributes.outcome.HasField("failure")
    ]


def test_freezes_of_a_verify_ssh_environment_count_only_signed_and_once(temporal, task_queue, worker, name, tmp_path):
    alice, bob, mallory = (keypair(tmp_path, who) for who in ("alice", "bob", "mallory"))

    async def main(apps: ApplicationClient):
        text = signed_app(name, {"alice": alice, "bob": bob})
        await apps.send(name, ApplicationChange(source=text, path="prodline.yaml", applied_by="ops"))
        handle = apps.handle(name)
        refused: list[str] = []

        async def send(update: str, order: FreezeOrder | UnfreezeOrder):
            """As any client with access to the namespace can: the update itself, no CLI checks."""
            try:
                return await handle.execute_update(update, order, result_type=object)
            except WorkflowUpdateFailedError as exc:
                refused.append(str(exc.cause.message if isinstance(exc.cause, ApplicationError) else exc.cause))
                return None

        def freeze(environment: str, by: str, reason: str, signer: Signer | None = None) -> FreezeOrder:
            order = FreezeOrder(environment=environment, by=by, reason=reason)
            order.signed = signer and signed(signer, "freeze", name, environment, reason)
            return order

        def unfreeze(environment: str, by: str, signer: Signer | None = None, for_env: str | None = None):
            order = UnfreezeOrder(environment=environment, by=by)
            order.signed = signer and signed(signer, "unfreeze", name, for_env or environment, "")
            return order

        # Unsigned, where production (or every environment, production among them) takes signatures only.
        await send(FREEZE_UPDATE, freeze("production", "alice", "incident 7"))
        await send(FREEZE_UPDATE, freeze("", "alice", "stop the line"))
        staging = await send(FREEZE_UPDATE, freeze("staging", "carol", "load test"))  # verify: none there
        await send(FREEZE_UPDATE, freeze("production", "bob", "incident 7", Signer(alice, by="bob")))  # a forged name
        await send(
            FREEZE_UPDATE, freeze("production", "mallory", "incident 7", Signer(mallory))
        )  # a key nobody enrolled
        first = await send(FREEZE_UPDATE, freeze("production", "whoever", "incident 7", Signer(alice)))
        # Lifting it: unsigned; with a signature made for staging; a freeze signed for another reason.
        await send(UNFREEZE_UPDATE, unfreeze("production", "mallory"))
        await send(UNFREEZE_UPDATE, unfreeze("production", "bob", Signer(bob), for_env="staging"))
        tampered = freeze("production", "bob", "5 minutes", Signer(bob)).model_copy(update={"reason": "5 days"})
        await send(FREEZE_UPDATE, tampered)
        lift = unfreeze("production", "bob", Signer(bob))
        lifted = await send(UNFREEZE_UPDATE, lift)
        # Production frozen again, by alice; bob's unfreeze sent a second time must not lift it.
        again = await send(FREEZE_UPDATE, freeze("production", "alice", "incident 8", Signer(alice)))
        await send(UNFREEZE_UPDATE, lift)
        return staging, first, lifted, again, refused, await apps.freezes(name)

    staging, first, lifted, again, refused, kept = run(with_apps(temporal, task_queue, main))
    assert (staging["by"], staging["verified"]) == ("carol", "")
    # The key's owner, not the name sent.
    assert (first["by"], first["verified"]) == ("alice", f"ssh {fingerprint(alice)}")
    assert [f["id"] for f in lifted] == [first["id"]]
    unsigned = "production takes signed decisions only (verify: ssh), a {0} too: sign it with `prodline {0} ... --key ~/.ssh/KEY`"
    assert refused == [
        unsigned.format("freeze"),
        unsigned.format("freeze"),
        "signed with alice's key, not bob's",
        refused[3],  # mallory's key: checked below
        unsigned.format("unfreeze"),
        "the unfreeze was signed for environment 'staging', but this one has 'production'",
        "the freeze was signed for reason '5 minutes', but this one has '5 days'",
        "this signed order was taken already: sign a new one (a signature counts once)",
    ]
    assert refused[3].startswith("key SHA256:") and refused[3].endswith(" is not enrolled")
    # Nothing refused changed anything: the staging freeze and alice's second production freeze stand.
    assert [(f.environment, f.by, f.reason) for f in kept] == [
        ("staging", "carol", "load test"),
        ("production", "alice", "incident 8"),
    ]
    assert again["verified"] == f"ssh {fingerprint(alice)}"
    # Each refusal stays in the application workflow's history, with its reason.
    assert refusals(temporal, application_id(name)) == refused


def signed(signer: Signer, action: str, application: str, environment: str, reason: str):
    document = signer.document(
        FreezeDocument, action=action, application=application, environment=environment, reason=reason,
        nonce=uuid.uuid4().hex,
    )  # fmt: skip
    return signer.sign(document)


async def with_apps(temporal, task_queue, use):
    return await use(ApplicationClient(await client_for(temporal), task_queue))


def test_a_signed_freeze_from_the_cli_names_the_verified_signer(cli, worker, project, tmp_path):
    alice = keypair(tmp_path, "alice")
    service_file = project(service(step("deploy", "true")), app=signed_app(project.application, {"alice": alice}))
    cli.apply(service_file.parent.parent / "prodline.yaml")
    until = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    unsigned = cli.run("freeze", "--application", project.application, "--environment", "production", "--reason", "r")
    assert unsigned.returncode == 2 and "sign it with `prodline freeze ... --key" in unsigned.stderr, unsigned.stderr
    common = ("--application", project.application, "--environment", "production")
    frozen = cli.run("freeze", *common, "--reason", "incident 9", "--until", until, "--key", str(alice))
    assert frozen.returncode == 0, frozen.stderr
    assert frozen.stdout.startswith(
        f"{project.application}: production frozen by alice [ssh {fingerprint(alice)}] until "
    )
    lifted = cli.run("unfreeze", *common, "--key", str(alice), "--json")
    assert lifted.returncode == 0, lifted.stderr
    assert [f["reason"] for f in json.loads(lifted.stdout)] == ["incident 9"]


def test_in_an_application_with_signed_starts_a_rollback_is_signed_and_its_reason_bound(
    cli, worker, project, tmp_path, temporal
):
    alice = keypair(tmp_path, "alice")
    app = signed_app(project.application, {"alice": alice}, head="signed_starts: true\n")
    service_file = project(
        service(step("deploy", 'echo "$PRODLINE_VERSION" > "../live-$PRODLINE_ENVIRONMENT"')), app=app
    )
    for version in ("1.0.0", "1.1.0"):
        started = cli.run("release", "start", str(service_file), "--version", version, "--key", str(alice), "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
    back = ("rollback", "checkout", "--application", project.application, "--environment", "staging")

    unsigned = cli.run(*back, "--reason", "bad build", "--wait", "--json")
    assert unsigned.returncode == 1, unsigned.stdout + unsigned.stderr
    assert (
        "requires signed starts and this one is not signed: roll back with `prodline rollback ... --key"
        in (json.loads(unsigned.stdout)["reason"])
    )
    assert (tmp_path / "live-staging").read_text() == "1.1.0\n"  # nothing ran

    signed = cli.run(*back, "--reason", "bad build", "--key", str(alice), "--as", "alice", "--wait", "--json")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    outcome = json.loads(signed.stdout)
    assert (tmp_path / "live-staging").read_text() == "1.0.0\n"
    status = json.loads(cli.run("release", "status", outcome["release_id"], "--json").stdout)
    assert (status["initiator"], status["initiator_verified"]) == ("alice", f"ssh {fingerprint(alice)}")

    # Its signed request, copied from history and started again under the same ID while the
    # signature is still valid: a second rollback nobody signed for.
    async def replayed() -> str:
        from temporalio.common import WorkflowIDReusePolicy

        from prodline.config.release import ReleaseRequest
        from prodline.contracts import RELEASE_WORKFLOW

        client = await client_for(temporal)
        first = (await client.get_workflow_handle(outcome["release_id"]).fetch_history()).events[0]
        request = ReleaseRequest.model_validate_json(
            first.workflow_execution_started_event_attributes.input.payloads[0].data
        )
        await client.start_workflow(
            RELEASE_WORKFLOW, request, id=request.release_id, task_queue=cli.env["PRODLINE_TASK_QUEUE"],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )  # fmt: skip
        return request.release_id

    again = final_state(cli, run(replayed()), "failed")
    assert "ran before (run " in again["reason"] and "a rollback or a heal runs once" in again["reason"], again
    assert (tmp_path / "live-staging").read_text() == "1.0.0\n"

    # A start signed for one reason, sent with another (what the rollback and its hold record).
    async def tampered() -> str:
        from prodline.client import ReleaseClient
        from prodline.config.release import ReleaseRequest, RestoreOrder
        from prodline.identity.documents import StartDocument

        client = ReleaseClient(await client_for(temporal), cli.env["PRODLINE_TASK_QUEUE"])
        records = await client.ledger(project.application, "checkout", "staging")
        order = RestoreOrder(environment="staging", kind="rollback", reason="routine", nonce=uuid.uuid4().hex[:12])
        request = ReleaseRequest(
            application=project.application, service="checkout", version="1.1.0", initiator="alice", restore=order
        )
        signer = Signer(alice)
        document = signer.document(
            StartDocument, release=request.release_id, application=request.application, service="checkout",
            version="1.1.0", bundle=next(r for r in records if r.version == "1.1.0").service_bundle.digest,
            reason="routine",
        )  # fmt: skip
        signed_request = request.model_copy(update={"signed": signer.sign(document)})
        forged = signed_request.model_copy(update={"restore": order.model_copy(update={"reason": "bad build, again"})})
        return (await client.start(forged)).release_id

    reason = final_state(cli, run(tampered()), "failed")["reason"]
    assert "the start was signed for reason 'routine', but this release has 'bad build, again'" in reason, reason
    assert (tmp_path / "live-staging").read_text() == "1.0.0\n"


@pytest.mark.parametrize(
    ("parent", "counts"),
    [
        ("drift:shop.checkout:production:check-2026-12-02T10:00:00Z", True),  # the schedule's run
        ("", False),  # started by hand, claiming to heal
        ("drift:shop.checkout:staging:check-2026-12-02T10:00:00Z", False),  # another environment's check
        ("mallory-drift:shop.checkout:production:check-1", False),
    ],
)
def test_only_the_drift_check_heals_unsigned_where_starts_are_signed(parent, counts):
    from prodline.config.release import ReleasePlan, ReleaseRequest, RestoreOrder
    from prodline.identity.verify import Keyring
    from prodline.workflows.verification import Refused, identify_initiator

    order = RestoreOrder(environment="production", kind="heal", reason="drift in production", nonce="0123456789ab")
    request = ReleaseRequest(
        application="shop", service="checkout", version="1.0.0", initiator="prodline drift check", restore=order
    )
    plan = ReleasePlan(service_dir=".", application_dir=".", environments=[], signed_starts=True)
    started = datetime.now(UTC)
    if counts:
        assert identify_initiator(request, plan, Keyring.of({}), started, parent).person == "prodline drift check"
    else:
        with pytest.raises(Refused, match="requires signed starts and this one is not signed: roll back with"):
            identify_initiator(request, plan, Keyring.of({}), started, parent)
