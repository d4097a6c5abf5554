"""Where bundles, plan files and sensitive outputs live: out of workflow history.

A saved Terraform plan can hold secrets, so it never goes into history;
neither does a bundle (the service's code: megabytes, and Temporal payloads are
limited to 2 MB). Activities and the CLI put them here; history keeps only the
key and the SHA-256, so whoever reads an artifact back can refuse anything but
what was shown, approved or planned.

Backends (:func:`open_store`, from ``PRODLINE_ARTIFACTS``):

* a local folder, the embedded default (``PRODLINE_ARTIFACTS=/path`` or
  ``file:///path``; else ``PRODLINE_ARTIFACT_DIR``; else
  ``~/.local/state/prodline/artifacts``), files readable by their owner only.
  Enough when the CLI and every worker share one machine or volume;
* S3-compatible object storage (``PRODLINE_ARTIFACTS=s3://bucket/prefix``,
  :mod:`.s3`) for workers on several machines.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from prodline.errors import InvalidInput, NotFound, ProdlineError

STORE_VARIABLE = "PRODLINE_ARTIFACTS"


class ArtifactStore(Protocol):
    """Four operations, all keyed by a relative, ``/``-separated key."""

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing what was there); return its SHA-256."""
        ...

    def get(self, key: str) -> bytes:
        """The data under ``key``; :class:`ArtifactMissing` if there is none."""
        ...

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        """Create ``key`` from a file unless it exists (create-only where the backend can);
        True when this call uploaded it. For content-addressed keys: same key, same bytes."""
        ...

    def get_to_file(self, key: str, path: Path) -> None:
        """Write the data under ``key`` to ``path`` (streamed); :class:`ArtifactMissing` if none."""
        ...

    def describe(self) -> str:
        """Where it is, for messages: a folder or ``s3://bucket/prefix``."""
        ...


class ArtifactMissing(NotFound):
    pass


class ArtifactCorrupt(ProdlineError):
    """The bytes under a key are not the bytes that were stored there: refused, never used.

    Every read checks the SHA-256 recorded at write time, so a changed or damaged object
    (a bundle edited behind the store's back, a truncated plan) fails with this error,
    naming the key, instead of being deployed or applied.
    """


class LocalArtifactStore:
    """Files under ``root``; beside each, a hidden ``.NAME.sha256`` holding its SHA-256.

    Reads hash what they return and compare (hashing runs at ~1 GB/s: a few ms for a plan,
    ~0.1 s for a 100 MB bundle). A file without its record is refused too: otherwise
    deleting the record would be a way around the check.
    """

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        safe = "/".join(part.replace("..", "_") for part in key.split("/") if part)
        return self.root / safe

    @staticmethod
    def _record(path: Path) -> Path:
        return path.with_name(f".{path.name}.sha256")

    def _write(self, path: Path, chunks: Iterable[bytes]) -> tuple[Path, str]:
        """A temporary file beside ``path`` holding ``chunks``, and their SHA-256."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A name of its own per call (mkstemp, mode 0600): writers in one process, as
        # activities on a worker's threads are, must not share a temporary file.
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name), digest.hexdigest()

    def _write_record(self, path: Path, digest: str) -> None:
        temporary, _ = self._write(self._record(path), [digest.encode()])
        temporary.replace(self._record(path))

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        temporary, digest = self._write(path, [data])
        # Record first, then the data: a reader in between sees a mismatch and reads again.
        self._write_record(path, digest)
        temporary.replace(path)  # readers never see half a file
        return digest

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        target = self._path(key)
        if target.exists():
            return False
        temporary, digest = self._write(target, _chunks(path))
        try:
            # The record goes first, so the file is never visible without it. Writers racing
            # here write the same record: a content-addressed key means the same bytes.
            self._write_record(target, digest)
            os.link(temporary, target)  # create-only: fails if another writer got there first
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        return True

    def _read(self, key: str, sink: BinaryIO) -> None:
        """Copy the file to ``sink`` and check it against its record; a put that replaced
        the file while we read shows as a mismatch once, so a mismatch is read twice."""
        path = self._path(key)
        for attempt in (1, 2):
            try:
                expected = self._record(path).read_text().strip()
            except FileNotFoundError:
                if not path.exists():
                    raise ArtifactMissing(f"artifact {key!r} is not in {self.root}") from None
                raise ArtifactCorrupt(
                    f"artifact {key!r} in {self.root} has no recorded SHA-256 ({self._record(path).name}): "
                    "it was not written by this store and is refused; put it again"
                ) from None
            sink.seek(0)
            sink.truncate()
            digest = hashlib.sha256()
            try:
                for chunk in _chunks(path):
                    digest.update(chunk)
                    sink.write(chunk)
            except FileNotFoundError:
                raise ArtifactMissing(f"artifact {key!r} is not in {self.root}") from None
            if digest.hexdigest() == expected:
                return
            if attempt == 2:
                raise ArtifactCorrupt(
                    f"artifact {key!r} in {self.root} does not match its recorded SHA-256 "
                    f"(expected {expected}, read {digest.hexdigest()}): the file was changed or damaged"
                )

    def get(self, key: str) -> bytes:
        sink = io.BytesIO()
        self._read(key, sink)
        return sink.getvalue()

    def get_to_file(self, key: str, path: Path) -> None:
        # Renamed into place only once verified: ``path`` holds the checked artifact or nothing new.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w+b") as f:
                self._read(key, f)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def describe(self) -> str:
        return str(self.root)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_store(url: str | None = None) -> ArtifactStore:
    """The store ``url`` names, else ``PRODLINE_ARTIFACTS``, else the local default."""
    url = url or os.environ.get(STORE_VARIABLE, "")
    if not url:
        root = os.environ.get("PRODLINE_ARTIFACT_DIR") or str(Path.home() / ".local/state/prodline/artifacts")
        return LocalArtifactStore(Path(root))
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from .s3 import S3ArtifactStore  # boto3 is loaded only by those who use it

        return S3ArtifactStore.from_url(url)
    if parsed.scheme in ("", "file"):
        return LocalArtifactStore(Path(parsed.path if parsed.scheme else url).expanduser())
    raise InvalidInput(f"{STORE_VARIABLE}={url!r}: unknown store; use a folder, file:///folder or s3://bucket/prefix")
