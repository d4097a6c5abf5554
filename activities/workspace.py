"""Each activity attempt's own copy of the release's code.

Steps write into their folders (Terraform creates ``.terraform/``, scripts leave
files behind), so each attempt of a step or rule gets its own writable checkout
of the bundle (:meth:`~prodline.artifacts.cache.BundleCache.checkout`, which
proves every byte against the bundle's digest), made before the runner starts
(off the event loop) and removed when the attempt ends, whatever its outcome. A
retry, on this worker or another, starts from the same bytes.

Attempts live under the cache root, in ``attempts/`` (the same filesystem as the
cached archives; the system temp folder may be a small tmpfs). Each holds a lock
while it lives; what a killed worker left behind (nobody holds its lock) is
removed by :func:`sweep_workspaces`, which the worker calls when it starts.

A checkout of a big bundle, fetched cold from a remote store, can take longer
than a step's heartbeat timeout: the activity heartbeats while it runs. A
cancelled attempt waits for the checkout's thread before removing the folder,
or the thread would go on writing into a folder already deleted.

The step and rule activities open the workspace (``async with
attempt_workspace(run.context)``); :class:`~.context.WorkerContext` resolves
working directories inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path

from temporalio.exceptions import ApplicationError

from prodline.artifacts import cache as bundle_cache
from prodline.artifacts.cache import BundleCache, BundleCorrupt, remove_tree
from prodline.artifacts.store import STORE_VARIABLE, ArtifactMissing, ArtifactStore, open_store
from prodline.contracts import NON_RETRYABLE_CONFIG, RunContext

from .process import heartbeat_while

# Leftovers younger than this are kept even when unlocked: an attempt takes its lock just
# after creating its folder, and the sweep must not race that.
SWEEP_AGE = timedelta(hours=1)
_LOCK = ".lock"

_workspace: ContextVar[Path | None] = ContextVar("prodline_workspace", default=None)


def shared_store() -> ArtifactStore:
    """The worker's artifact store: one per configured location (an S3 client is not free)."""
    return _store_for(os.environ.get(STORE_VARIABLE, ""), os.environ.get("PRODLINE_ARTIFACT_DIR", ""))


@functools.lru_cache(maxsize=4)
def _store_for(url: str, folder: str) -> ArtifactStore:
    return open_store(url or None)


def attempts_root(cache_root: Path | None = None) -> Path:
    return (cache_root if cache_root is not None else bundle_cache.default_root()) / "attempts"


@asynccontextmanager
async def attempt_workspace(context: RunContext, store: ArtifactStore | None = None) -> AsyncIterator[Path | None]:
    """A writable copy of ``context.bundle`` for one attempt (None when it names no bundle)."""
    if context.bundle is None:
        yield None
        return
    bundle = context.bundle
    cache = BundleCache(store or shared_store())
    parent = attempts_root(cache.root)
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = Path(tempfile.mkdtemp(prefix=f"{bundle.short}-", dir=parent))
    lock = os.open(root / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "alive": released by the kernel if this worker dies
        try:
            checkout = asyncio.to_thread(cache.checkout, bundle, root / "code")
            code = await heartbeat_while(checkout, {"checkout": bundle.digest})
        except (BundleCorrupt, ArtifactMissing) as exc:  # no retry makes these right
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        token = _workspace.set(code)
        try:
            yield code
        finally:
            _workspace.reset(token)
    finally:
        try:
            # Shielded: a cancel arriving now must not leave the folder half-removed and unlocked.
            await asyncio.shield(asyncio.to_thread(remove_tree, root))
        finally:
            os.close(lock)


def current_workspace() -> Path | None:
    """The copy of the bundle this attempt works in, if the activity opened one."""
    return _workspace.get()


def sweep_workspaces(cache_root: Path | None = None, max_age: timedelta = SWEEP_AGE) -> int:
    """Remove attempt folders a dead worker left (older than ``max_age``, their lock free), and the
    cache's own leftovers (:func:`prodline.artifacts.cache.sweep`). Returns how many were removed.

    Safe while other workers share the cache folder: a live attempt holds its lock.
    """
    removed = 0
    cutoff = time.time() - max_age.total_seconds()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(attempts_root(cache_root)):
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            if _unclaimed(Path(entry.path)):
                remove_tree(Path(entry.path))
                removed += 1
    return removed + bundle_cache.sweep(cache_root, max_age)


def _unclaimed(folder: Path) -> bool:
    try:
        fd = os.open(folder / _LOCK, os.O_RDWR)
    except FileNotFoundError:
        return True  # killed between creating the folder and locking it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # and with it our lock: rmtree follows at once
    return True
