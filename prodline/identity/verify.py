"""Verifying signed documents against the keys enrolled for people.

A :class:`Keyring` maps public keys to the people they belong to; it comes from
the registered application (``people: {alice: [ssh-ed25519 AAAA...]}``) through
:meth:`Keyring.of`, or from an OpenSSH ``allowed_signers`` file (a worker's
admin keys) through :func:`load_allowed_signers`. :func:`verify` checks one
:class:`~.documents.Signed` document: the SSHSIG signature (the format of
``ssh-keygen -Y sign -n prodline``, checked with the ``sshsig`` library), the
key's owner, the kind, the name the signer gave and the validity window, and
returns the document with the person the key belongs to.

Only ``ssh-ed25519`` and ``ssh-rsa`` keys (RSA signing with rsa-sha2-256 or
rsa-sha2-512) can be verified: that is what ``sshsig`` implements. ECDSA keys,
security keys (``sk-...``) and certificates are refused with a sentence saying so.

Pure and deterministic: no clock reads (``now`` is passed in; the release
workflow passes ``workflow.now()``), no I/O outside :func:`load_allowed_signers`,
no global state. The workflow imports this module through
``workflow.unsafe.imports_passed_through()``; ``sshsig`` and ``cryptography`` do
no I/O either.
"""

from __future__ import annotations

import binascii
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import sshsig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sshsig.allowed_signers import AllowedSigner
from sshsig.sshsig import SshsigSignature

from prodline.errors import InvalidInput
from prodline.identity.documents import CLOCK_SKEW, MAX_VALIDITY, NAMESPACE, Document, SignatureRefused, Signed

D = TypeVar("D", bound=Document)

SUPPORTED = ("ssh-ed25519", "ssh-rsa")
MIN_RSA_BITS = 2048  # smaller RSA keys are breakable; ssh-keygen itself makes 3072-bit ones
# ssh-keygen hashes the message with one of these; sshsig would accept any hashlib name (md5 too).
HASHES = (b"sha256", b"sha512")
_UNSUPPORTED = "only ssh-ed25519 and ssh-rsa keys can be verified"
_NOT_A_SIGNATURE = "the signature is not an SSH signature (ssh-keygen -Y sign -n prodline)"


@dataclass(frozen=True)
class Signer:
    """Who signed: the person the key is enrolled for, and the key's fingerprint."""

    person: str
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it


class Keyring:
    """People and their public keys, parsed once; a key belongs to one person only."""

    def __init__(self, owners: Mapping[bytes, Signer]):
        self._owners = dict(owners)  # the key's SSH wire encoding -> its owner

    @classmethod
    def of(cls, people: Mapping[str, Sequence[str]]) -> Keyring:
        """A keyring from ``person -> OpenSSH public key lines``; :class:`InvalidInput` names a bad line."""
        owners: dict[bytes, Signer] = {}
        for person, lines in people.items():
            for index, line in enumerate(lines):
                _enrol(owners, line, person, f"{person}[{index}]")
        return cls(owners)

    def owner(self, key: sshsig.PublicKey | str) -> Signer | None:
        """The person a key (a parsed key or an OpenSSH line) is enrolled for, or None."""
        if isinstance(key, str):
            if key_problem(key):
                return None
            key = _parse(key)
        return self._owners.get(_blob(key))

    def people(self) -> Iterator[str]:
        """The enrolled people, each once, in enrolment order."""
        return iter(dict.fromkeys(signer.person for signer in self._owners.values()))

    def __len__(self) -> int:
        return len(self._owners)  # keys, not people

    def __bool__(self) -> bool:
        return bool(self._owners)


def key_problem(line: str) -> str:
    """ "" when ``line`` is an OpenSSH public key prodline can verify, else a sentence saying why not."""
    parts = line.split()
    if len(parts) < 2:
        return "not an OpenSSH public key (expected a line like 'ssh-ed25519 AAAA... comment')"
    key_type = parts[0]
    if key_type not in SUPPORTED:
        if key_type.startswith(("ecdsa-", "sk-", "ssh-dss")) or key_type.endswith("@openssh.com"):
            return f"{key_type}: {_UNSUPPORTED}"
        return f"not an OpenSSH public key: unknown key type {key_type!r} (expected ssh-ed25519 or ssh-rsa)"
    try:
        key = sshsig.PublicKey.from_openssh_str(f"{parts[0]} {parts[1]}")
    except (ValueError, NotImplementedError, binascii.Error):
        return f"not an OpenSSH public key: the {key_type} key data is damaged (copy the whole line of the .pub file)"
    public = serialization.load_ssh_public_key(key.openssh_str().encode())
    if isinstance(public, rsa.RSAPublicKey):
        bits = public.key_size
        if bits < MIN_RSA_BITS:
            return f"ssh-rsa key of {bits} bits: RSA keys need at least {MIN_RSA_BITS} bits (make an ed25519 key: ssh-keygen -t ed25519)"
    return ""


def fingerprint(line: str) -> str:
    """The key's ``SHA256:...`` fingerprint, as ``ssh-keygen -lf`` prints it."""
    problem = key_problem(line)
    if problem:
        raise InvalidInput(problem)
    return _parse(line).sha256_str()


def load_allowed_signers(path: Path) -> Keyring:
    """The keys an OpenSSH ``allowed_signers`` file enrols for the ``prodline`` namespace.

    Lines are ``principal[,principal] [options] keytype base64 [comment]``, the
    format of ``ssh-keygen -Y verify`` and git's ``gpg.ssh.allowedSignersFile``;
    ``#`` comments and blank lines are skipped. A line counts only when its
    ``namespaces="..."`` option is absent or matches ``prodline``, so a file kept
    for git commit signing (``namespaces="git"``) enrols nobody here. The first
    principal is the person who signed (any others on the line are not used). Principal
    patterns, ``cert-authority`` and ``valid-after``/``valid-before`` are refused
    rather than ignored: ignoring a restriction would accept more than the file says.
    Errors are :class:`InvalidInput` naming ``file:line``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the allowed signers file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not a text file (expected OpenSSH allowed_signers lines)") from None
    owners: dict[bytes, Signer] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        entry = _allowed_signer(line, where)
        options = entry.options or {}
        namespaces = options.get("namespaces")
        if namespaces is not None and not _matches(NAMESPACE, namespaces):
            continue
        if "cert-authority" in options:
            raise InvalidInput(f"{where}: cert-authority is not supported (list each person's own key)")
        if "valid-after" in options or "valid-before" in options:
            raise InvalidInput(f"{where}: valid-after/valid-before are not supported (remove the option or the line)")
        person = entry.principals.split(",")[0].strip()
        if not person or any(char in person for char in "*?!"):
            raise InvalidInput(
                f"{where}: the principal {person!r} is a pattern, not a person (write a name or an email)"
            )
        _enrol(owners, f"{entry.key_type} {entry.base64_key}", person, where)
    return Keyring(owners)


def verify(signed: Signed, kind: type[D], keys: Keyring, now: datetime) -> tuple[D, Signer]:
    """The document ``signed`` holds and who signed it; :class:`SignatureRefused` with the reason if refused.

    Checks, in order: the signature is an SSH signature, made for the ``prodline``
    namespace, with a key enrolled in ``keys``, over exactly ``signed.document``;
    the document is a ``kind``; the name it gives (``by``), if any, is the key's
    owner; and ``now`` lies in its validity window (issued no more than
    :data:`CLOCK_SKEW` in the future, not expired, valid for no more than
    :data:`MAX_VALIDITY`).
    """
    try:
        envelope = SshsigSignature.from_armored(signed.signature)
    except (ValueError, NotImplementedError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise SignatureRefused(_NOT_A_SIGNATURE) from None
    namespace = envelope.namespace.decode("utf-8", "replace")
    if namespace != NAMESPACE:
        raise SignatureRefused(
            f"the signature was made for the namespace {namespace!r}, not {NAMESPACE!r} (sign with ssh-keygen -Y sign -n {NAMESPACE})"
        )
    if envelope.hash_algo not in HASHES:
        raise SignatureRefused(
            f"the signature hashes with {envelope.hash_algo.decode('utf-8', 'replace')!r}: {_NOT_A_SIGNATURE}"
        )
    key = _embedded_key(envelope)
    signer = keys.owner(key)
    if signer is None:
        raise SignatureRefused(f"key {key.sha256_str()} is not enrolled")
    try:
        checked = sshsig.check_signature(signed.document.encode("utf-8"), signed.signature, NAMESPACE)
    except Exception:  # InvalidSignature, and sshsig's asserts and ValueErrors on a malformed signature field
        raise SignatureRefused("the signature does not match the signed document") from None
    if _blob(checked) != _blob(key):  # cannot happen (same armor), but the owner must be of the key that verified
        raise SignatureRefused("the signature does not match the signed document")
    document = kind.parse(signed.document)
    if document.by and document.by != signer.person:
        raise SignatureRefused(f"signed with {signer.person}'s key, not {document.by}'s")
    if now > document.expires_at:
        raise SignatureRefused(f"the signed {kind.kind_name()} expired at {_when(document.expires_at)}")
    if document.issued_at > now + CLOCK_SKEW:
        raise SignatureRefused(
            f"the signed {kind.kind_name()} was issued in the future ({_when(document.issued_at)}; "
            f"clocks may differ by {_minutes(CLOCK_SKEW)} at most)"
        )
    if document.expires_at - document.issued_at > MAX_VALIDITY:
        raise SignatureRefused(
            f"the signed {kind.kind_name()} is valid for more than {_hours(MAX_VALIDITY)} "
            f"(from {_when(document.issued_at)} to {_when(document.expires_at)})"
        )
    return document, signer


def _embedded_key(envelope: SshsigSignature) -> sshsig.PublicKey:
    key = sshsig.PublicKey.do_from_ssh_encoding(envelope.public_key)
    if isinstance(key, NotImplementedError):
        key_type = _key_type(envelope.public_key)
        raise SignatureRefused(f"the signature was made with a {key_type} key: {_UNSUPPORTED}")
    if isinstance(key, ValueError):
        raise SignatureRefused(_NOT_A_SIGNATURE)
    return key


def _key_type(blob: bytes) -> str:
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length].decode("ascii", "replace") or "unknown"


def _parse(line: str) -> sshsig.PublicKey:
    parts = line.split()
    return sshsig.PublicKey.from_openssh_str(f"{parts[0]} {parts[1]}")


def _blob(key: sshsig.PublicKey) -> bytes:
    # The canonical wire encoding (re-encoded by cryptography), the bytes the fingerprint hashes.
    return binascii.a2b_base64(key.openssh_str().split()[1])


def _enrol(owners: dict[bytes, Signer], line: str, person: str, where: str) -> None:
    """Enrol the key of an OpenSSH ``line`` for ``person``; InvalidInput, naming ``where``, if it cannot be."""
    problem = key_problem(line)
    if problem:
        raise InvalidInput(f"{where}: {problem}")
    key = _parse(line)
    blob = _blob(key)
    known = owners.get(blob)
    if known is not None and known.person != person:
        raise InvalidInput(
            f"{where}: the key {known.fingerprint} is already {known.person}'s: "
            "a key must belong to one person, or nobody can tell who signed"
        )
    owners[blob] = Signer(person=person, fingerprint=key.sha256_str())


def _allowed_signer(line: str, where: str) -> AllowedSigner:
    try:
        return AllowedSigner.parse(line)
    except (ValueError, IndexError) as exc:
        raise InvalidInput(
            f"{where}: not an allowed signers line ({exc}); expected 'person [namespaces=\"prodline\"] ssh-ed25519 AAAA...'"
        ) from None


def _matches(name: str, patterns: str) -> bool:
    # OpenSSH's match_pattern_list: a matching negated pattern ("!git") excludes, any other match includes.
    matched = False
    for pattern in patterns.split(","):
        pattern = pattern.strip()
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name, pattern.removeprefix("!")):
            if negated:
                return False
            matched = True
    return matched


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _minutes(delta: timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} minutes"


def _hours(delta: timedelta) -> str:
    return f"{int(delta.total_seconds() // 3600)}h"
