"""Where plan files and sensitive outputs live: out of workflow history.

A saved Terraform plan can hold secrets, so it never goes into history.
Activities put it here under a key derived from the release, environment and
step; history keeps only the key and the file's SHA-256, so the apply
activity can refuse anything but the plan that was shown and approved.

The default store is a local directory (``PRODLINE_ARTIFACT_DIR``, else
``~/.local/state/prodline/artifacts``), files readable by the worker's user
only. It works when plan and apply run on the same machine or a shared
volume; the interface is two methods so an object store can replace it, and
runners take a store (``TerraformRunner(store=...)``), :func:`default_store`
when given none.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; return its SHA-256."""
        ...

    def get(self, key: str) -> bytes:
        """The data stored under ``key``; :class:`ArtifactMissing` if there is none."""
        ...


class ArtifactMissing(Exception):
    pass


class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        safe = "/".join(part.replace("..", "_") for part in key.split("/") if part)
        return self.root / safe

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        temporary.replace(path)  # readers never see half a file
        return sha256(data)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key!r} is not in {self.root}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_store() -> ArtifactStore:
    root = os.environ.get("PRODLINE_ARTIFACT_DIR") or str(Path.home() / ".local/state/prodline/artifacts")
    return LocalArtifactStore(Path(root))
