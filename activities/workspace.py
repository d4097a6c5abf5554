"""Each activity attempt's own copy of the release's code.

Steps write into their folders (Terraform creates ``.terraform/``, scripts leave
files behind), so no attempt may run in the shared, verified copy of a bundle
in the worker's cache (:class:`~prodline.artifacts.cache.BundleCache`): each
attempt of a step or rule gets a writable copy, made before the runner starts
(off the event loop) and removed when the attempt ends, whatever its outcome.
A retry, on this worker or another, starts from the same bytes.

The step and rule activities open the workspace (``async with
attempt_workspace(run.context)``); :class:`~.context.WorkerContext` resolves
working directories inside it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path

from temporalio.exceptions import ApplicationError

from prodline.artifacts.cache import BundleCache, BundleCorrupt
from prodline.artifacts.store import STORE_VARIABLE, ArtifactMissing, ArtifactStore, open_store
from prodline.contracts import NON_RETRYABLE_CONFIG, RunContext

_workspace: ContextVar[Path | None] = ContextVar("prodline_workspace", default=None)


def shared_store() -> ArtifactStore:
    """The worker's artifact store: one per configured location (an S3 client is not free)."""
    return _store_for(os.environ.get(STORE_VARIABLE, ""), os.environ.get("PRODLINE_ARTIFACT_DIR", ""))


@functools.lru_cache(maxsize=4)
def _store_for(url: str, folder: str) -> ArtifactStore:
    return open_store(url or None)


@asynccontextmanager
async def attempt_workspace(context: RunContext, store: ArtifactStore | None = None) -> AsyncIterator[Path | None]:
    """A writable copy of ``context.bundle`` for one attempt (None when it names no bundle)."""
    if context.bundle is None:
        yield None
        return
    bundle = context.bundle
    cache = BundleCache(store or shared_store())
    root = Path(tempfile.mkdtemp(prefix=f"prodline-{bundle.short}-"))
    try:
        try:
            code = await asyncio.to_thread(cache.checkout, bundle, root / "code")
        except (BundleCorrupt, ArtifactMissing) as exc:  # no retry makes these right
            raise ApplicationError(str(exc), type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        token = _workspace.set(code)
        try:
            yield code
        finally:
            _workspace.reset(token)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)


def current_workspace() -> Path | None:
    """The copy of the bundle this attempt works in, if the activity opened one."""
    return _workspace.get()
