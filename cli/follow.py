"""``--wait``: following a release until it ends, a timeout passes, or Ctrl-C.

While it waits it asks, every ``PRODLINE_WORKER_CHECK_SECONDS`` (30 s), whether
a worker takes the release's work, and warns each time none does, naming the
task queue (an environment's own, when its work waits there): without a worker
a release waits forever, in silence. Neither the timeout nor Ctrl-C
touches the release; the last line says that it goes on and how to follow it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import timedelta

from prodline.client import Progress, ReleaseClient, workers
from prodline.config.durations import format_duration
from prodline.errors import TIMED_OUT, ProdlineError

from .common import warn
from .main import Interrupted

POLL_SECONDS = float(os.environ.get("PRODLINE_POLL_SECONDS", "0.5"))
WORKER_CHECK_SECONDS = float(os.environ.get("PRODLINE_WORKER_CHECK_SECONDS", "30"))


class StillRunning(ProdlineError):
    """``--timeout`` passed before the release ended (exit code 5); the release goes on."""

    exit_code = TIMED_OUT


async def follow(
    client: ReleaseClient,
    release_id: str,
    *,
    timeout: timedelta | None,
    what: str = "the release",
    on_progress: Callable[[Progress], None] = lambda _: None,
    checked: bool = False,
) -> Progress:
    """Watch the release until it ends and return the last look (it carries the outcome).

    ``checked``: the caller has just looked for a worker, so the first check comes
    one interval later.
    """
    interval = timedelta(seconds=WORKER_CHECK_SECONDS)
    next_check = time.monotonic() + (WORKER_CHECK_SECONDS if checked else 0)
    goes_on = f"{what} goes on (follow it with `prodline release status {release_id}`)"
    try:
        async with asyncio.timeout(timeout.total_seconds() if timeout is not None else None):
            async for look in client.watch(release_id, POLL_SECONDS):
                on_progress(look)
                if look.outcome is not None:
                    return look
                if time.monotonic() >= next_check:
                    desc = look.description
                    # With the status, so that an environment's own queue is named with the environment.
                    problem = await workers.problem(
                        client.temporal, desc.task_queue, desc, stall=interval, status=look.status
                    )
                    if problem:
                        warn(problem)
                    next_check = time.monotonic() + WORKER_CHECK_SECONDS
    except TimeoutError:
        assert timeout is not None
        raise StillRunning(
            f"gave up waiting after {format_duration(timeout)}: release {release_id} is still running; {goes_on}"
        ) from None
    except asyncio.CancelledError:  # Ctrl-C: asyncio cancels the command
        raise Interrupted(f"stopped following release {release_id}; {goes_on}") from None
    raise AssertionError("a watch ends with the release's outcome")
