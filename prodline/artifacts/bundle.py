"""Release bundles: a folder packed into a canonical archive named by its content.

The canonical tar is what the digest covers, so the same files give the same
digest on any machine, whatever their mtimes, owners, umask or the order a
folder lists them in: PAX format, entries sorted by path, no folder entries
(extraction makes them), uid/gid 0 with empty names, mtime 0, mode 0644 or
0755 (only the executable bit survives), symbolic links kept as relative links.
The digest is the SHA-256 of that tar, and the store keeps the tar itself
under ``bundles/sha256/<hex>.tar``: not compressed, because packing runs on
every ``release start`` (unchanged content included) and gzip, even at level 1,
adds about twice what ``tar`` plus ``sha256sum`` take for a 20 MB folder
(bench/bundle.py), against a 1.5x budget; and uncompressed, the stored
object's own checksum is the bundle's digest. The archive is written in one streaming pass (hashed as the
files are read), never held in memory whole.

Which files go in is :mod:`.listing`'s job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from prodline.config.release import BundleRef

from .ignore import IGNORE_FILE
from .listing import BundleError, Entry, Listing, list_bundle
from .store import ArtifactStore

__all__ = [
    "BUNDLE_MAX_BYTES",
    "BUNDLE_MAX_FILES",
    "BUNDLE_WARN_BYTES",
    "BundleError",
    "Packed",
    "bundle_key",
    "pack",
    "upload",
]

BUNDLE_WARN_BYTES = 10 * 2**20
BUNDLE_MAX_BYTES = 100 * 2**20
BUNDLE_MAX_FILES = 20_000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Packed:
    """A packed bundle: its reference and the archive (the canonical tar), deleted on ``__exit__``."""

    ref: BundleRef
    archive: Path
    root: Path
    warnings: list[str] = field(default_factory=list)

    def __enter__(self) -> Packed:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.archive.parent, ignore_errors=True)


def bundle_key(ref: BundleRef) -> str:
    return f"bundles/sha256/{ref.digest.removeprefix('sha256:')}.tar"


def pack(
    root: Path,
    *,
    warn_bytes: int = BUNDLE_WARN_BYTES,
    max_bytes: int = BUNDLE_MAX_BYTES,
    max_files: int = BUNDLE_MAX_FILES,
    exclude: Iterable[str] = (),
) -> Packed:
    """Pack ``root`` into a canonical archive in a temporary folder; :class:`BundleError` if it cannot be.

    ``exclude``: paths relative to ``root`` to leave out (see :func:`.listing.list_bundle`).
    """
    listing = list_bundle(root, exclude)
    warnings = [*listing.warnings, *_limits(listing, warn_bytes, max_bytes, max_files)]
    folder = Path(tempfile.mkdtemp(prefix="prodline-bundle-"))
    try:
        archive = folder / "bundle.tar"
        with archive.open("wb") as out:
            sink = _Sink(out)
            for entry in listing.entries:
                _add(sink, entry)
            sink.finish()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    ref = BundleRef(digest=f"sha256:{sink.hexdigest()}", size=sink.size, files=len(listing.entries))
    return Packed(ref=ref, archive=archive, root=listing.root, warnings=warnings)


def upload(packed: Packed, store: ArtifactStore) -> int:
    """Put the archive in the store unless it is there; the bytes sent (0: the store had it)."""
    if store.put_file_if_absent(bundle_key(packed.ref), packed.archive):
        return packed.archive.stat().st_size
    return 0


# --- the canonical tar ---------------------------------------------------------------------


class _Sink:
    """The tar goes through here on its way to the archive file: hashed and counted."""

    def __init__(self, out: BinaryIO):
        self.size = 0
        self._out = out
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._out.write(data)

    def finish(self) -> None:
        """The end of archive: two zero blocks, then zeros to a whole record (as tar and tarfile do)."""
        end = self.size + 2 * _BLOCK
        self.write(_NUL * (2 * _BLOCK + (-end % _RECORD)))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _add(sink: _Sink, entry: Entry) -> None:
    if entry.link is not None:
        sink.write(header(entry.rel, SYMLINK, 0o777, 0, entry.link))
        return
    sink.write(header(entry.rel, REGULAR, 0o755 if entry.executable else 0o644, entry.size))
    left = entry.size
    try:
        fd = os.open(entry.file, os.O_RDONLY)  # no buffered file object: thousands of small files
        try:
            while left and (data := os.read(fd, min(left, _CHUNK))):
                sink.write(data)
                left -= len(data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BundleError(f"{entry.path}: cannot be read for the bundle: {exc.strerror or exc}") from None
    if left:  # the header promised entry.size bytes
        raise BundleError(f"{entry.path} shrank while it was being packed; start again once nothing writes to it")
    sink.write(_NUL * (-entry.size % _BLOCK))


# Our own header writer rather than tarfile's: what tarfile puts in fields it does not
# use has changed between Python patch releases (3.11's device fields), and every byte
# here is part of the digest. Changing a byte re-names every bundle: do it on purpose.
REGULAR, SYMLINK, _PAX = b"0", b"2", b"x"
_BLOCK, _RECORD, _NUL = 512, 20 * 512, b"\0"
_MAGIC = b"ustar\x0000"  # POSIX ustar, as PAX archives use


def header(name: str, kind: bytes, mode: int, size: int, link: str = "") -> bytes:
    """The header block(s) of one entry: a PAX extended header first if a name does not fit ustar."""
    records = b""
    for key, value in (("path", name), ("linkpath", link)):
        if not value.isascii() or len(value) > 100:
            records += _pax_record(key, value)
    out = b""
    if records:
        out = _ustar("././@PaxHeader", _PAX, 0, len(records), "") + records + _NUL * (-len(records) % _BLOCK)
    return out + _ustar(name, kind, mode, size, link)


def _ustar(name: str, kind: bytes, mode: int, size: int, link: str) -> bytes:
    def text(value: str, length: int) -> bytes:  # as in the PAX format: what does not fit is in the PAX record
        return value.encode("ascii", "replace")[:length].ljust(length, _NUL)

    def octal(value: int, length: int) -> bytes:
        return b"%0*o\0" % (length - 1, value)

    block = b"".join(
        (
            text(name, 100),
            octal(mode, 8),
            octal(0, 8),  # uid
            octal(0, 8),  # gid
            octal(size, 12),
            octal(0, 12),  # mtime
            b" " * 8,  # the checksum, counted as spaces
            kind,
            text(link, 100),
            _MAGIC,
            _NUL * 32,  # uname
            _NUL * 32,  # gname
            _NUL * 8,  # devmajor
            _NUL * 8,  # devminor
            _NUL * 155,  # prefix
            _NUL * 12,
        )
    )
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _pax_record(key: str, value: str) -> bytes:
    """``"<length> key=value\\n"``, where the length counts its own digits."""
    payload = b" %s=%s\n" % (key.encode(), value.encode("utf-8"))
    length = len(payload)
    while len(payload) + len(str(length)) != length:
        length = len(payload) + len(str(length))
    return str(length).encode() + payload


# --- limits ------------------------------------------------------------------------------


def _limits(listing: Listing, warn_bytes: int, max_bytes: int, max_files: int) -> list[str]:
    root, count, total = listing.root, len(listing.entries), listing.total_bytes
    exclude = f"exclude what the release does not run in {root / IGNORE_FILE} (gitignore syntax)"
    if count > max_files:
        raise BundleError(
            f"{root}: {count:,} files to bundle, more than the limit of {max_files:,} (largest: "
            f"{_largest(listing, by_files=True)}); {exclude}, or raise the limit if the release needs them all"
        )
    if total > max_bytes:
        raise BundleError(
            f"{root}: {_size(total)} to bundle, more than the limit of {_size(max_bytes)} (largest: "
            f"{_largest(listing, by_files=False)}); {exclude}, or raise the limit if the release needs them all"
        )
    if total > warn_bytes:
        return [
            f"{root}: the bundle holds {_size(total)} in {count:,} files (largest: {_largest(listing, by_files=False)}); "
            f"every new content is uploaded and fetched by each worker: {exclude}"
        ]
    return []


def _largest(listing: Listing, *, by_files: bool, top: int = 3) -> str:
    """The biggest top-level files and folders of the bundle, for the message that names what to exclude."""
    weights: dict[str, int] = {}
    for e in listing.entries:
        head, _, rest = e.rel.partition("/")
        name = f"{head}/" if rest else head
        weights[name] = weights.get(name, 0) + (1 if by_files else e.size)
    biggest = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{name} {n:,} files" if by_files else f"{name} {_size(n)}" for name, n in biggest)


def _size(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
