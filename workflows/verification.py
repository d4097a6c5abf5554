"""Who decided, and who started: signatures checked inside the release workflow.

A signed decision (or start) carries the exact document its signer signed. The
workflow checks the signature against the keys of the application revision the
release pinned (``prodline.identity.verify``: pure and deterministic, with
``workflow.now()`` as its clock, so a replay reaches the same verdict), then that
the document names this release, this run, the environment waiting, the plans
shown, the bundle and the revision. Nothing the CLI says about the signer is
believed: the person is the key's owner.

An unsigned decision counts only where the environment says ``verify: none``.
Every refusal is one sentence, recorded with the decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from prodline.config.application import Application
from prodline.config.freezes import FreezeOrder, UnfreezeOrder
from prodline.config.release import ReleasePlan, ReleaseRequest
from prodline.contracts import Decision, ReleaseStatus, drift_check_id
from prodline.identity.documents import (
    DecisionDocument,
    Document,
    FreezeDocument,
    SignatureRefused,
    Signed,
    StartDocument,
)
from prodline.identity.verify import Keyring, Signer, verify

D = TypeVar("D", bound=Document)


class Refused(Exception):
    """A decision or start that does not count; the message says why.

    ``who`` is the signer when the signature itself held (so the record names the person
    proven, and the signature counts as used), else None.
    """

    def __init__(self, reason: str, who: Identity | None = None):
        super().__init__(reason)
        self.who = who


@dataclass(frozen=True)
class Identity:
    person: str
    verified: str = ""  # "ssh SHA256:..." when a signature proved it
    signature_digest: str = ""


def use_digest(signed: Signed, signer: Signer) -> str:
    """What makes a signed decision one use: its document and its signer, not the armor's bytes
    (the same signature can be re-wrapped or re-encoded into other text that still verifies)."""
    return "sha256:" + hashlib.sha256(f"{signer.fingerprint}\n{signed.document}".encode()).hexdigest()


def identify_decision(
    decision: Decision, verify_mode: str, keys: Keyring, now: datetime, status: ReleaseStatus
) -> Identity:
    """The person behind ``decision`` at the gate open in its environment, or :class:`Refused` with the reason."""
    if decision.signed is None:
        if verify_mode != "none":  # anything but an explicit `none` takes signatures only
            raise Refused(
                f"{decision.environment} takes signed decisions only: sign it (`prodline approve|reject --key ~/.ssh/KEY`)"
            )
        return Identity(person=decision.by)
    document, signer = _verified(decision.signed, DecisionDocument, keys, now)
    digest = use_digest(decision.signed, signer)
    earlier = next((d for d in status.decisions if d.signature_digest == digest), None)
    if earlier is not None:
        raise Refused(
            f"this signature was already presented at {earlier.at:%Y-%m-%d %H:%M:%S}Z; sign each decision anew"
        )
    proven = Identity(person=signer.person, verified=f"ssh {signer.fingerprint}", signature_digest=digest)
    mismatch = _decision_mismatch(document, decision, status.decision_subject(decision.environment))
    if mismatch:
        raise Refused(mismatch, proven)  # the signer is known, and this signature now used
    return proven


def identify_initiator(
    request: ReleaseRequest, plan: ReleasePlan, keys: Keyring, started: datetime, parent: str = ""
) -> Identity:
    """Who started the release: the signer of its start, or the name given where starts need no signature.

    ``started`` is when the workflow started: a start valid then stays valid however long
    resolving the plan took. ``parent`` is the workflow that started it as a child, if one
    did: a heal started by the service's drift check is the engine's own, signed by nobody.
    """
    restore = request.restore
    if request.signed is None:
        drift_check = drift_check_id(request.application, request.service, restore.environment) if restore else ""
        if restore is not None and restore.kind == "heal" and parent.startswith(f"{drift_check}-"):
            return Identity(person=request.initiator)  # the schedule's run of the drift check started it
        if plan.signed_starts:
            how = (
                "roll back with `prodline rollback ... --key ~/.ssh/KEY`"
                if restore is not None
                else "start it with `prodline release start --key ~/.ssh/KEY`"
            )
            raise Refused(f"{request.application} requires signed starts and this one is not signed: {how}")
        return Identity(person=request.initiator)
    document, signer = _verified(request.signed, StartDocument, keys, started)
    bundle = plan.service_bundle.digest if plan.service_bundle else ""
    named = {
        "release": (document.release, request.release_id),
        "application": (document.application, request.application),
        "service": (document.service, request.service),
        "version": (document.version, request.version),
        "bundle": (document.bundle, bundle),
        "service_file": (document.service_file, request.service_file),
        "parameters": (document.parameters, request.parameters),
        "reason": (document.reason, restore.reason if restore else ""),
    }
    for field, (signed, actual) in named.items():
        if signed != actual:
            raise Refused(f"the start was signed for {field} {_shown(signed)}, but this release has {_shown(actual)}")
    return Identity(
        person=signer.person, verified=f"ssh {signer.fingerprint}", signature_digest=use_digest(request.signed, signer)
    )


def identify_freezer(order: FreezeOrder | UnfreezeOrder, application: str, app: Application, now: datetime) -> Identity:
    """Who freezes (or unfreezes): the signer where an environment it touches takes signed
    decisions (``verify: ssh``; every environment, for a freeze of all), else the name given.

    A signed order must say what its document says; the caller keeps ``signature_digest``
    to refuse the same signed order twice.
    """
    action = "freeze" if isinstance(order, FreezeOrder) else "unfreeze"
    touched = [e for e in app.environments if not order.environment or e.name == order.environment]
    signing = [e.name for e in touched if e.verify == "ssh"]
    if order.signed is None:
        if signing:
            raise Refused(
                f"{' and '.join(signing)} take{'s' if len(signing) == 1 else ''} signed decisions only "
                f"(verify: ssh), a {action} too: sign it with `prodline {action} ... --key ~/.ssh/KEY`"
            )
        return Identity(person=order.by)
    document, signer = _verified(order.signed, FreezeDocument, Keyring.of(app.people), now)
    named = {
        "action": (document.action, action),
        "application": (document.application, application),
        "environment": (document.environment, order.environment),
        "reason": (document.reason, order.reason),
        "until": (document.until, order.until if isinstance(order, FreezeOrder) else None),
    }
    for field, (signed, actual) in named.items():
        if signed != actual:
            raise Refused(f"the {action} was signed for {field} {_shown(signed)}, but this one has {_shown(actual)}")
    return Identity(
        person=signer.person, verified=f"ssh {signer.fingerprint}", signature_digest=use_digest(order.signed, signer)
    )


def _verified(signed: Signed, kind: type[D], keys: Keyring, now: datetime) -> tuple[D, Signer]:
    if not keys:
        raise Refused("the application lists no `people` with keys, so no signature can be checked")
    try:
        return verify(signed, kind, keys, now)
    except SignatureRefused as exc:
        raise Refused(str(exc)) from None


def _decision_mismatch(document: DecisionDocument, decision: Decision, subject: dict[str, Any]) -> str:
    """Why the signed document is not about this decision at this gate ("" when it is).

    ``subject`` is what the release's own status says the decision is about
    (:meth:`ReleaseStatus.decision_subject`), the same fields the client signed.
    """
    if document.release != subject["release"]:
        return f"the signature is for release {document.release}, not {subject['release']}"
    if document.run != subject["run"]:
        return f"the signature is for run {document.run} of this release; the running one is {subject['run']}"
    if document.environment != subject["environment"]:
        return f"the signature is for {document.environment}; the release is waiting in {subject['environment']}"
    if document.gate != subject["gate"]:
        return (
            f"the signature is for gate {document.gate or '(none named)'}; the release now waits at gate "
            f"{subject['gate']} (a signature counts at the one gate it names)"
        )
    if document.verdict != decision.verdict.value or document.comment != decision.comment:
        return "the decision sent is not the one signed (verdict or comment differ)"
    if document.plans != subject["plans"]:
        return (
            f"the signature approves plans {_plans(document.plans)}, but the plans now are {_plans(subject['plans'])} "
            "(planned again since): review the new plans and sign again"
        )
    if document.bundle != subject["bundle"]:
        return f"the signature is for bundle {_shown(document.bundle)}, not {_shown(subject['bundle'])}"
    if (document.revision, document.revision_digest) != (subject["revision"], subject["revision_digest"]):
        return (
            f"the signature is for application revision {document.revision}; this release obeys {subject['revision']}"
        )
    return ""


def _plans(plans: dict[str, str]) -> str:
    return (
        "{" + ", ".join(f"{step}: {_shown(digest)}" for step, digest in sorted(plans.items())) + "}" if plans else "{}"
    )


def _shown(value: object) -> str:
    text = str(value)
    return text.removeprefix("sha256:")[:12] if text.startswith("sha256:") else repr(value)
