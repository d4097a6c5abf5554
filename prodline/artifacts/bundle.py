"""Release bundles: a folder packed into a canonical archive named by its content.

The canonical tar is what the digest covers, so the same files give the same
digest on any machine, whatever their mtimes, owners, umask or the order a
folder lists them in: PAX format, entries sorted by path, no folder entries
(extraction makes them), uid/gid 0 with empty names, mtime 0, mode 0644 or
0755 (only the executable bit survives), symbolic links kept as relative links.
The digest is the SHA-256 of that uncompressed tar; the store keeps it
gzip-compressed (level 1: packing is on every ``release start``, so speed
counts more than the last few percent) under ``bundles/sha256/<hex>.tar.gz``.
The archive is written in one streaming pass (hash and compress as the files
are read), never held in memory whole.

Which files go in is :mod:`.listing`'s job.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import zlib
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
COMPRESS_LEVEL = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Packed:
    """A packed bundle: its reference and the compressed archive, deleted on ``__exit__``."""

    ref: BundleRef
    archive: Path
    root: Path
    warnings: list[str] = field(default_factory=list)

    def __enter__(self) -> Packed:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.archive.parent, ignore_errors=True)


def bundle_key(ref: BundleRef) -> str:
    return f"bundles/sha256/{ref.digest.removeprefix('sha256:')}.tar.gz"


def pack(
    root: Path,
    *,
    warn_bytes: int = BUNDLE_WARN_BYTES,
    max_bytes: int = BUNDLE_MAX_BYTES,
    max_files: int = BUNDLE_MAX_FILES,
) -> Packed:
    """Pack ``root`` into a canonical archive in a temporary folder; :class:`BundleError` if it cannot be."""
    listing = list_bundle(root)
    warnings = [*listing.warnings, *_limits(listing, warn_bytes, max_bytes, max_files)]
    folder = Path(tempfile.mkdtemp(prefix="prodline-bundle-"))
    try:
        archive = folder / "bundle.tar.gz"
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
    """The uncompressed tar goes through here: hashed, counted, then gzip-compressed to ``out``."""

    def __init__(self, out: BinaryIO):
        self.size = 0
        self._out = out
        self._hash = hashlib.sha256()
        self._zip = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, mtime 0
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._hash.update(self._buffer)
        self.size += len(self._buffer)
        self._out.write(self._zip.compress(self._buffer))
        self._buffer.clear()

    def finish(self) -> None:
        """The end of archive as tarfile writes it: two zero blocks, then zeros to a whole record."""
        end = self.size + len(self._buffer) + 2 * tarfile.BLOCKSIZE
        self.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)))
        self._flush()
        self._out.write(self._zip.flush())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _add(sink: _Sink, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.rel)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
        info.mode = 0o777
        sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))
        return
    info.mode = 0o755 if entry.executable else 0o644
    info.size = entry.size
    sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))
    left = entry.size
    try:
        with entry.path.open("rb") as f:
            while left:
                data = f.read(min(left, _CHUNK))
                if not data:
                    break
                sink.write(data)
                left -= len(data)
            changed = left != 0 or f.read(1) != b""
    except OSError as exc:
        raise BundleError(f"{entry.path}: cannot be read for the bundle: {exc.strerror or exc}") from None
    if changed:
        raise BundleError(f"{entry.path} changed while it was being packed; start again once nothing writes to it")
    sink.write(tarfile.NUL * (-entry.size % tarfile.BLOCKSIZE))


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
