"""Signing on the signer's machine: a key, how long a signature holds, and who says they sign.

The client signs a document naming exactly what it was shown (a decision, a start, an
apply); the engine verifies it against enrolled keys. Nothing here verifies or trusts
anything: a signature the CLI made can still be refused, and only the workflow says so.
The private key is read here (or by ``ssh-keygen``, or held by ssh-agent) and never sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from prodline.errors import InvalidInput
from prodline.identity.documents import DEFAULT_VALIDITY, MAX_VALIDITY, Document, Signed

D = TypeVar("D", bound=Document)


@dataclass(frozen=True)
class Signer:
    """Signs documents with ``key`` (a private key file, or the ``.pub`` of an ssh-agent key)."""

    key: Path
    valid_for: timedelta = DEFAULT_VALIDITY
    by: str = ""  # the person the signer says they are; "" = whoever owns the key
    flag: str = "--key"  # how the user named the key, for error messages
    prompt: bool = True  # a terminal to type a passphrase on: without one, a protected key fails at once

    def check(self) -> None:
        """Refuse an unusable key or validity before anything is contacted (InvalidInput, exit 2)."""
        check_validity(self.valid_for)
        path = self.key.expanduser()
        if not path.exists():
            raise InvalidInput(
                f"{self.flag} {self.key}: no such file; give your private key (e.g. ~/.ssh/id_ed25519) "
                "or the .pub of a key loaded in ssh-agent"
            )
        if not path.is_file():
            raise InvalidInput(f"{self.flag} {self.key}: not a file; give a private key or an ssh-agent key's .pub")
        if not os.access(path, os.R_OK):
            raise InvalidInput(f"{self.flag} {self.key}: not readable by you; check its owner and mode (chmod 600)")

    def document(self, kind: type[D], now: datetime | None = None, **fields: object) -> D:
        """The document to sign, issued now and valid for :attr:`valid_for`."""
        return kind.issue(now=now or datetime.now(UTC), valid_for=self.valid_for, by=self.by, **fields)

    def sign(self, document: Document) -> Signed:
        """The document's canonical text and its signature (may ask for the key's passphrase)."""
        from prodline.identity.signing import SigningError, sign  # cryptography: only when signing

        text = document.text()
        try:
            armored = sign(text, self.key.expanduser(), prompt=self.prompt)
        except SigningError as exc:  # it names the file and the fix already
            raise InvalidInput(f"{self.flag}: {exc}") from None
        return Signed(document=text, signature=armored)


def has_terminal() -> bool:
    """Whether this process has a controlling terminal, where ssh-keygen would ask for a passphrase."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def check_validity(valid_for: timedelta) -> None:
    if valid_for <= timedelta(0):
        raise InvalidInput(f"--valid-for {_text(valid_for)}: must be longer than 0s (e.g. 15m)")
    if valid_for > MAX_VALIDITY:
        raise InvalidInput(
            f"--valid-for {_text(valid_for)}: longer than {_text(MAX_VALIDITY)}, the most a signature may be "
            "valid for; sign again when you need to"
        )


def _text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n) or "0s"
