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
import os
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from prodline.errors import InvalidInput, NotFound

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


class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        safe = "/".join(part.replace("..", "_") for part in key.split("/") if part)
        return self.root / safe

    def _write(self, key: str, write: Callable[[BinaryIO], object]) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
        return temporary

    def put(self, key: str, data: bytes) -> str:
        self._write(key, lambda f: f.write(data)).replace(self._path(key))  # readers never see half a file
        return sha256(data)

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        target = self._path(key)
        if target.exists():
            return False

        def copy(f: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, f, 1 << 20)

        temporary = self._write(key, copy)
        try:
            os.link(temporary, target)  # create-only: fails if another writer got there first
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key!r} is not in {self.root}") from None

    def get_to_file(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key!r} is not in {self.root}") from None

    def describe(self) -> str:
        return str(self.root)


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
    raise InvalidInput(
        f"{STORE_VARIABLE}={url!r}: unknown store; use a folder, file:///folder or s3://bucket/prefix"
    )


# Kept for callers of the first version of this module.
default_store = open_store
