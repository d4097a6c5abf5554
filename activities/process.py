"""Run a child process from an activity: heartbeat while it runs, kill it when cancelled.

Every kind of step and rule that shells out (commands today, Terraform
tomorrow) goes through :func:`run_process`, so the rules live in one place:

* the child gets its own process group, so cancelling the release stops the
  command *and* whatever it spawned (``sh -c "sleep 600"`` included);
* while it runs the activity heartbeats, which is how Temporal notices a dead
  worker and how a cancellation reaches us at all;
* on cancellation the group gets ``cancel_signal`` (SIGTERM for scripts,
  SIGINT for tools like Terraform that unwind on Ctrl-C), then SIGKILL after
  ``grace``, and only then does the activity report itself cancelled;
* output is kept as a bounded tail with secret values masked, for failure
  reasons; it is never logged wholesale.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from temporalio import activity

log = structlog.get_logger("prodline.process")

TAIL_LINES = 200


@dataclass
class ProcessResult:
    exit_code: int
    output: str

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def redact(text: str, secrets: Iterable[str]) -> str:
    """Mask every secret in ``text``; a multi-line secret (a PEM key) line by line too."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        for part in secret.splitlines():
            if len(part.strip()) >= 8:
                text = text.replace(part, "***")
    return text


# Output lines longer than this are cut (the rest is dropped, not waited on).
MAX_LINE = 16 * 1024
READ_CHUNK = 64 * 1024


def _heartbeat_interval() -> float:
    """A third of the heartbeat timeout (one lost heartbeat is not fatal), and at most 2 s:
    a heartbeat's answer is how a running step hears that the release was cancelled."""
    if not activity.in_activity():
        return 1.0
    timeout = activity.info().heartbeat_timeout
    return max(0.2, min(2.0, timeout.total_seconds() / 3)) if timeout else 2.0


def _heartbeat(details: dict) -> None:
    if activity.in_activity():
        activity.heartbeat(details)


@contextlib.asynccontextmanager
async def _heartbeating(details: dict) -> AsyncIterator[None]:
    """Heartbeat in the background while a cancelled activity winds down: it is alive, and
    stopping a tool (Terraform writing its state after Ctrl-C) may take longer than the
    heartbeat timeout, which must not turn a clean cancel into a timeout."""

    async def beat() -> None:
        while True:
            _heartbeat(details)
            await asyncio.sleep(_heartbeat_interval())

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()


async def run_process(
    command: str | list[str],
    *,
    cwd: str,
    env: dict[str, str],
    secrets: Iterable[str] = (),
    cancel_signal: int = signal.SIGTERM,
    grace: timedelta = timedelta(seconds=10),
    on_line: Callable[[str], None] | None = None,
    progress: Callable[[], dict] | None = None,
) -> ProcessResult:
    """Run ``command`` (a shell string, or an argv list run as is) and return its exit code and output tail.

    ``on_line`` sees every output line (secrets masked); ``progress`` adds details
    to each heartbeat (e.g. resources applied so far), so they show in Temporal.
    """
    secrets = [s for s in secrets if s]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    counter = {"lines": 0}

    def emit(raw: bytes) -> None:
        line = redact(raw[:MAX_LINE].decode(errors="replace"), secrets)
        tail.append(line)
        counter["lines"] += 1
        if on_line is not None:
            on_line(line)

    async def pump() -> None:
        # Chunks, not readline(): a line longer than asyncio's 64 KiB limit must not
        # stop the reading, or the child blocks on a full pipe and the step hangs.
        assert proc.stdout is not None
        pending = b""
        while chunk := await proc.stdout.read(READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                emit(raw)
            if len(pending) > MAX_LINE:
                emit(pending)
                pending = b""
        if pending:
            emit(pending)

    pumping = asyncio.create_task(pump())
    waiting = asyncio.create_task(proc.wait())
    interval = _heartbeat_interval()
    try:
        while not waiting.done():
            _heartbeat({"pid": proc.pid, "output_lines": counter["lines"], **(progress() if progress else {})})
            await asyncio.wait({waiting}, timeout=interval)
        with contextlib.suppress(asyncio.TimeoutError):
            # The leader exited; a grandchild holding stdout open must not hang us.
            await asyncio.wait_for(asyncio.shield(pumping), timeout=5)
    except BaseException:
        await _terminate(proc, cancel_signal, grace)
        pumping.cancel()
        raise
    return ProcessResult(exit_code=waiting.result(), output="\n".join(tail))


async def _terminate(proc: asyncio.subprocess.Process, first: int, grace: timedelta) -> None:
    """Signal the whole process group, once more after a moment, then SIGKILL; reap the child.

    The repeat covers tools that miss a signal while starting up (seen with the
    embedded Terraform); a second Ctrl-C is also how people ask twice.
    """
    log.info("process.cancel", pid=proc.pid, signal=signal.Signals(first).name)
    soon = min(2.0, grace.total_seconds() / 2)
    steps = ((first, soon), (first, grace.total_seconds() - soon), (signal.SIGKILL, 5.0))
    async with _heartbeating({"pid": proc.pid, "cancelling": True}):
        await _signal_until_gone(proc, steps)


async def _signal_until_gone(proc: asyncio.subprocess.Process, steps) -> None:
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=wait)
            # The leader is gone; make sure nothing it started survives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except TimeoutError:
            continue


async def heartbeat_while(awaitable, details: dict, on_cancel: Callable[[], None] | None = None):
    """Await blocking work (a thread) while heartbeating; when cancelled, let it finish first.

    A thread cannot be killed: reporting "cancelled" while its tool still runs
    (and holds, say, Terraform's lock) would be a lie, so the cancellation waits.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_heartbeat_interval())
            if done:
                return task.result()
            _heartbeat(details)
    except asyncio.CancelledError:
        async with _heartbeating({**details, "cancelling": True}):
            if on_cancel is not None:
                await asyncio.to_thread(on_cancel)
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what gets reported
        raise
