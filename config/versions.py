"""Which of two versions is newer: what lanes need to keep a newer version from being overwritten.

Versions are compared as Semantic Versioning orders them (``1.10.0`` after
``1.9.2``; ``2.0.0-rc.1`` before ``2.0.0``; build metadata after ``+``
ignored), and only where both look like numbered versions (``1.4``, ``v2.0.1``,
``2026.12.1-rc.1``). A commit SHA or a build name says nothing about which is
newer: two such versions are never called older. Pure: the ledger workflow and
the lanes call it.
"""

from __future__ import annotations

import re

_PIECE = re.compile(r"\d+|[A-Za-z]+")
# Numbered versions: dot-separated numbers, then an optional pre-release or build part.
_NUMBERED = re.compile(r"^[vV]?\d+(\.\d+)*([-+].*)?$")


def _pieces(text: str) -> tuple[tuple[int, int | str], ...]:
    # (0, n) for numbers and (1, s) for words: a number sorts before a word, as in SemVer pre-releases.
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _PIECE.findall(text))


def version_key(version: str) -> tuple:
    """A sort key: ``version_key(a) < version_key(b)`` when ``a`` is older than ``b``."""
    core, _, _build = version.lstrip("vV").partition("+")
    release, dash, pre = core.partition("-")
    # A release sorts after its own pre-releases: (core, 1) > (core, 0, pre...).
    return (_pieces(release), (0, _pieces(pre)) if dash else (1,))


def comparable(version: str) -> bool:
    return bool(_NUMBERED.match(version))


def is_older(version: str, than: str) -> bool:
    """Whether ``version`` is older than ``than``; False when either is not a numbered version."""
    return comparable(version) and comparable(than) and version_key(version) < version_key(than)
