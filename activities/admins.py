"""Who may change an application's rules: the admin keys the workers are deployed with.

``PRODLINE_ADMIN_KEYS`` names a file on the control worker in OpenSSH's
``allowed_signers`` format (``alice namespaces="prodline" ssh-ed25519 AAAA...``).
When it is set, an apply counts only if one of those keys signed it (an
ApplyDocument naming the application, the new revision's digest and the revision
it replaces, so an old signed apply cannot be replayed to roll the rules back).
The root of trust is whoever deploys the workers, not whoever can reach Temporal.
Unset, applies are taken as before (a dev setup), and the revision says unsigned.

A local activity of the application workflow: it reads the worker's file, which
workflow code may not. The file is read on every apply, so a rotated key takes
effect without restarting the worker.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from prodline.contracts import ADMIT_APPLY, APPLY_REFUSED, ApplyAdmission
from prodline.errors import InvalidInput
from prodline.identity.documents import ApplyDocument, SignatureRefused
from prodline.identity.verify import Keyring, load_allowed_signers, verify

ADMIN_KEYS_VARIABLE = "PRODLINE_ADMIN_KEYS"


class AdminKeysUnusable(Exception):
    """The admin keys file is set but cannot be used; the message says why."""


def admin_keys() -> Keyring | None:
    """The workers' admin keys; None when none are configured (PRODLINE_ADMIN_KEYS unset)."""
    path = os.environ.get(ADMIN_KEYS_VARIABLE, "").strip()
    if not path:
        return None
    try:
        keys = load_allowed_signers(Path(path))
    except InvalidInput as exc:  # names file:line
        raise AdminKeysUnusable(str(exc)) from None
    except OSError as exc:
        raise AdminKeysUnusable(f"{path}: {exc.strerror}") from None
    if not keys:
        raise AdminKeysUnusable(f"{path} enrols no key for prodline")
    return keys


def describe_admin_keys() -> str:
    """What a starting worker says of its admin keys (for its first log line)."""
    try:
        keys = admin_keys()
    except AdminKeysUnusable as exc:
        return f"UNUSABLE, every apply will be refused: {exc}"
    if keys is None:
        return "none: applies are taken unsigned, until a revision is signed"
    path = os.environ[ADMIN_KEYS_VARIABLE].strip()
    return f"{len(keys)} key(s) of {', '.join(sorted(set(keys.people())))} from {path}"


def _refuse(reason: str) -> ApplicationError:
    return ApplicationError(reason, type=APPLY_REFUSED, non_retryable=True)


@activity.defn(name=ADMIT_APPLY)
async def admit_apply(check: ApplyAdmission) -> str:
    """The admin who signed this apply ("alice [ssh SHA256:...]"), "" when no admin keys are configured."""
    return await asyncio.to_thread(_admit, check)  # reads a file: off the worker's event loop


def _admit(check: ApplyAdmission) -> str:
    try:
        keys = admin_keys()
    except AdminKeysUnusable as exc:  # a broken file refuses every apply rather than letting any through
        raise _refuse(f"the workers' admin keys ({ADMIN_KEYS_VARIABLE}) cannot be used: {exc}") from None
    if keys is None:
        return ""
    if check.signed is None:
        raise _refuse(
            "the workers accept only applies signed by an admin key: "
            "`prodline app apply FILE --key ~/.ssh/KEY` with a key listed in their admin keys file"
        )
    try:
        document, signer = verify(check.signed, ApplyDocument, keys, datetime.now(UTC))
    except SignatureRefused as exc:
        reason = str(exc)
        if reason.endswith("is not enrolled"):
            reason += f" among the workers' admin keys ({ADMIN_KEYS_VARIABLE})"
        raise _refuse(reason) from None
    if document.application != check.application:
        raise _refuse(f"the signature is for application {document.application}, not {check.application}")
    if document.digest != check.digest:
        raise _refuse("the signature is for another revision (its digest differs from the file applied)")
    if document.replaces != check.replaces:
        raise _refuse(
            f"the signature replaces revision {document.replaces}, but revision {check.replaces} is current: "
            "someone applied since, or the signature is being replayed; review and sign again"
        )
    return f"{signer.person} [ssh {signer.fingerprint}]"
