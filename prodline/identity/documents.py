"""The documents people sign, and the signed pair that travels in Temporal payloads.

A person signs the *text* of a document: its canonical JSON (keys sorted, no
spaces, UTF-8), which :meth:`Document.text` produces. The engine verifies the
signature over the exact text it received (:class:`Signed.document`), then
parses that text back (:meth:`Document.parse`), so what was signed and what is
acted on cannot differ: there is no second encoding to disagree with the first.
Parsing refuses a JSON object with a key twice (``{"verdict":"approve",
"verdict":"reject"}``), which a person reading the text and the parser could
read differently.

Each document names what it decides on (the release, run, environment, plans,
bundle and revision for a decision) and a short validity window, so a signature
cannot be replayed for another release or later on. Which fields must match
what is the caller's check; the signature and the window are :mod:`.verify`'s.

Deterministic and free of I/O and clock reads (``now`` is always passed in):
the release workflow uses these models in workflow code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator, model_validator

NAMESPACE = "prodline"  # ssh-keygen -Y sign -n prodline: a git commit signature is not an approval
DEFAULT_VALIDITY = timedelta(minutes=15)
MAX_VALIDITY = timedelta(hours=24)  # a document valid for longer is refused
CLOCK_SKEW = timedelta(minutes=5)  # issued_at may be this far in the future (clocks differ)


class SignatureRefused(Exception):
    """A signed document was not accepted; ``reason`` (also ``str(exc)``) says why, for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Signed(BaseModel):
    """A document and its signature: public data only, safe in workflow history.

    Bounded: every decision stays in a release's history, refused ones included, and a flood
    of large ones must not push it past Temporal's history size limit.
    """

    # The exact text that was signed (canonical JSON of one of the documents below).
    document: str = Field(max_length=16 * 1024)
    # ASCII-armored SSH signature ("-----BEGIN SSH SIGNATURE-----..."); an RSA-4096 one is ~1 KB.
    signature: str = Field(max_length=8 * 1024)


class Document(BaseModel, extra="forbid", frozen=True):  # frozen: pyright sees it, and subclasses may narrow kind
    """What every signed document says: its kind, who signs it, and when it is valid."""

    kind: str
    by: str = ""  # the person the signer says they are; "" = whoever owns the key
    issued_at: AwareDatetime  # UTC (any other offset is converted)
    expires_at: AwareDatetime

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at is not after issued_at")
        return self

    def text(self) -> str:
        """The canonical text to sign: the same document gives the same text, whatever the field order."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def issue(cls, *, now: datetime, valid_for: timedelta = DEFAULT_VALIDITY, **fields: Any) -> Self:
        """A document issued at ``now`` (to the second: people read these times) and valid for ``valid_for``."""
        issued = now.replace(microsecond=0)
        return cls(issued_at=issued, expires_at=issued + valid_for, **fields)

    @classmethod
    def parse(cls, text: str) -> Self:
        """The document a signed text holds; :class:`SignatureRefused` if it is not one of this kind."""
        what = f"the signed document is not a prodline {cls.kind_name()}"
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError as exc:
            raise SignatureRefused(f"{what}: {_json_reason(exc)}") from None
        if not isinstance(data, dict):
            raise SignatureRefused(f"{what}: not a JSON object")
        expected = cls.model_fields["kind"].default
        if isinstance(expected, str) and data.get("kind") != expected:
            raise SignatureRefused(f"{what}: its kind is {data.get('kind')!r}, not {expected!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SignatureRefused(f"{what}: {_validation_reason(exc)}") from None

    @classmethod
    def kind_name(cls) -> str:
        """What people call this kind: "prodline.decision/v1" -> "decision"."""
        kind = cls.model_fields["kind"].default
        if not isinstance(kind, str):
            return "document"
        return kind.removeprefix("prodline.").split("/")[0]


class DecisionDocument(Document, frozen=True):
    """An approval or rejection of one gate of one run of a release, for the plans it names."""

    kind: Literal["prodline.decision/v1"] = "prodline.decision/v1"
    release: str
    run: str  # the release's original run: a reset keeps it, a new start of the same version does not
    environment: str
    gate: str = ""  # which gate of that run ("2: precondition approval"): one signature, one gate
    verdict: str
    comment: str = ""
    plans: dict[str, str] = {}  # step name -> plan digest: after a re-plan, this approval no longer counts
    bundle: str = ""
    revision: int = 0
    revision_digest: str = ""


class StartDocument(Document, frozen=True):
    """The start of a release, signed by its initiator (so ``forbid_initiator`` compares verified people)."""

    kind: Literal["prodline.start/v1"] = "prodline.start/v1"
    release: str
    application: str
    service: str
    version: str
    bundle: str = ""
    service_file: str = ""  # which service file in the bundle: its steps are what runs
    parameters: dict[str, str] = {}
    reason: str = ""  # a rollback's reason, recorded with it and its hold ("" for a release)


class ApplyDocument(Document, frozen=True):
    """A new revision of a registered application, signed by an admin."""

    kind: Literal["prodline.apply/v1"] = "prodline.apply/v1"
    application: str
    digest: str
    # The revision number current when signed (0: none). It binds the signature to one step,
    # so an old signed apply cannot be replayed later to roll the policy back.
    replaces: int


class FreezeDocument(Document, frozen=True):
    """A freeze or an unfreeze of an application's environment ("" : every environment).

    Signed where the environment (any, for "") takes signed decisions (``verify: ssh``). The
    ``nonce`` makes it one use: the application's workflow remembers the nonces it took while
    they are valid, so a signed unfreeze cannot be sent again to lift a later freeze.
    """

    kind: Literal["prodline.freeze/v1"] = "prodline.freeze/v1"
    action: Literal["freeze", "unfreeze"]
    application: str
    environment: str
    reason: str
    until: AwareDatetime | None = None  # a freeze's end, as the order gives it
    nonce: str = Field(min_length=8, max_length=64)

    @field_validator("until")
    @classmethod
    def _until_utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"the key {key!r} appears twice")
    return dict(pairs)


def _json_reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at character {exc.pos})"
    return str(exc)


def _validation_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    reason = f"{where}: {first['msg']}" if where else first["msg"]
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more)"
    return reason
