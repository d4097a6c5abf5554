"""Run a child process from an activity: heartbeat while it runs, stop it when cancelled.

Every step and rule kind that runs a process (command steps and rules, every
Terraform command) goes through :func:`run_process`, so the rules live in one
place:

* the child runs under a small guard (:mod:`.process_guard`) that leads its own
  process group, so stopping it stops the command *and* whatever it spawned
  (``sh -c "sleep 600"`` included), and the guard stops the group by itself when
  the worker dies, even of SIGKILL: no tool outlives its worker, holding a state
  lock or running provisioners nobody waits for;
* while it runs the activity heartbeats, which is how Temporal notices a dead
  worker and how a cancellation reaches us at all;
* on cancellation the group gets ``cancel_signal`` (SIGTERM for scripts, SIGINT
  for tools like Terraform that unwind on Ctrl-C), once more soon after, then
  SIGKILL after ``grace``; the activity keeps heartbeating meanwhile and reports
  itself cancelled only once the group is gone. A dead worker's children get the
  same treatment from their guard;
* output is kept as a bounded tail with secret values masked, for failure
  reasons; it is never logged wholesale. A tool whose stdout is data (JSON)
  can have it whole and unmasked (``capture_stdout``): it is parsed, never shown.

Blocking library calls that cannot be given to a process (Pulumi's Automation
API) heartbeat through :func:`heartbeat_while` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog
from temporalio import activity

log = structlog.get_logger("prodline.process")

T = TypeVar("T")

TAIL_LINES = 200
# Output lines longer than this are cut (the rest is dropped, not waited on).
MAX_LINE = 16 * 1024
READ_CHUNK = 64 * 1024
# After the guard's own SIGKILL step: how long more the worker waits before it kills the group itself.
_BACKSTOP = 10.0

_GUARD = str(Path(__file__).with_name("process_guard.py"))


@dataclass
class ProcessResult:
    exit_code: int
    output: str  # the tail of what it printed (stdout and stderr, or stderr alone with capture_stdout), masked
    stdout: str = ""  # with capture_stdout: all of stdout, not masked

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


# `sh` answers 126/127 when a command cannot run at all: retrying won't help. In a script
# that may be any of its lines, so the reason says what the code means, and the output which.
_CANNOT_RUN = {126: " (not executable)", 127: " (command not found)"}
# How much of a failed command its failure reason shows.
BRIEF_WIDTH = 60


def failure_message(command: str, result: ProcessResult, masked: Iterable[str]) -> str:
    """Why a command failed, in one reason: the command named briefly, its exit code, its output's tail.

    A multi-line script would bury the error under itself, so only its first line is shown.
    The command line may hold rendered secrets (an earlier step's sensitive output), so it is
    masked before it is cut: a secret split by the cut would escape the mask.
    """
    shown = brief(redact(command, masked))
    message = f"`{shown}` exited with code {result.exit_code}{_CANNOT_RUN.get(result.exit_code, '')}"
    tail = result.tail(10)
    return f"{message}: {tail}" if tail else message


def brief(command: str, width: int = BRIEF_WIDTH) -> str:
    """The command's first line, at most ``width`` characters, ending in "…" when anything was left out."""
    lines = command.strip().splitlines() or [""]
    first = lines[0].strip()
    if len(lines) == 1 and len(first) <= width:
        return first
    return first[:width].rstrip() + "…"


def _heartbeat_interval() -> float:
    """A third of the heartbeat timeout (one lost heartbeat is not fatal), and at most 2 s:
    a heartbeat's answer is how a running step hears that the release was cancelled."""
    if not activity.in_activity():
        return 1.0
    timeout = activity.info().heartbeat_timeout
    return max(0.2, min(2.0, timeout.total_seconds() / 3)) if timeout else 2.0


def _heartbeat(details: dict[str, Any]) -> None:
    if activity.in_activity():
        activity.heartbeat(details)


@contextlib.asynccontextmanager
async def _heartbeating(details: dict[str, Any]) -> AsyncIterator[None]:
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


class _Lines:
    """Splits a stream into masked lines: a bounded tail, a count, and a callback per line."""

    def __init__(self, secrets: list[str], on_line: Callable[[str], None] | None):
        self.secrets, self.on_line = secrets, on_line
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.count = 0

    def emit(self, raw: bytes) -> None:
        line = redact(raw[:MAX_LINE].decode(errors="replace"), self.secrets)
        self.tail.append(line)
        self.count += 1
        if self.on_line is not None:
            self.on_line(line)

    async def pump(self, stream: asyncio.StreamReader) -> None:
        # Chunks, not readline(): a line longer than asyncio's 64 KiB limit must not
        # stop the reading, or the child blocks on a full pipe and the step hangs.
        pending = b""
        while chunk := await stream.read(READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self.emit(raw)
            if len(pending) > MAX_LINE:
                self.emit(pending)
                pending = b""
        if pending:
            self.emit(pending)


async def run_process(
    command: str | list[str],
    *,
    cwd: str,
    env: dict[str, str],
    secrets: Iterable[str] = (),
    cancel_signal: int = signal.SIGTERM,
    grace: timedelta = timedelta(seconds=10),
    on_line: Callable[[str], None] | None = None,
    progress: Callable[[], dict[str, Any]] | None = None,
    capture_stdout: bool = False,
) -> ProcessResult:
    """Run ``command`` (a shell string, or an argv list run as is) and return its exit code and output tail.

    ``on_line`` sees every output line (secrets masked); ``progress`` adds details
    to each heartbeat (e.g. resources applied so far), so they show in Temporal.
    ``capture_stdout`` keeps stdout whole and apart (``result.stdout``); the tail
    is then stderr's.
    """
    masked = [s for s in secrets if s]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    # The guard stops the group when this end closes: on cancel below, or when the worker dies.
    control, keep = os.pipe()
    guarded = [sys.executable, "-I", "-S", _GUARD, str(control), str(int(cancel_signal)), str(grace.total_seconds())]
    try:
        proc = await asyncio.create_subprocess_exec(
            *guarded,
            "--",
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(control,),
        )
    except BaseException:
        os.close(keep)
        raise
    finally:
        os.close(control)
    assert proc.stdout is not None
    lines = _Lines(masked, on_line)
    if capture_stdout:
        assert proc.stderr is not None
        reading = asyncio.create_task(proc.stdout.read())
        pumping = asyncio.create_task(lines.pump(proc.stderr))
    else:
        reading, pumping = None, asyncio.create_task(lines.pump(proc.stdout))
    waiting = asyncio.create_task(proc.wait())
    interval = _heartbeat_interval()
    try:
        while not waiting.done():
            _heartbeat({"pid": proc.pid, "output_lines": lines.count, **(progress() if progress else {})})
            await asyncio.wait({waiting}, timeout=interval)
        stdout = (await reading).decode(errors="replace") if reading is not None else ""
        with contextlib.suppress(asyncio.TimeoutError):
            # The leader exited; a grandchild holding the pipe open must not hang us.
            await asyncio.wait_for(asyncio.shield(pumping), timeout=5)
    except BaseException:
        fd, keep = keep, -1
        await _stop(proc, fd, cancel_signal, grace)
        for task in (reading, pumping):
            if task is not None:
                task.cancel()
        raise
    finally:
        if keep >= 0:
            os.close(keep)
    return ProcessResult(exit_code=waiting.result(), output="\n".join(lines.tail), stdout=stdout)


async def _stop(proc: asyncio.subprocess.Process, keep: int, first: int, grace: timedelta) -> None:
    """Close the guard's pipe, so it stops the group (its policy, the only one); wait while heartbeating.

    Kill the group here only if the guard itself does not finish: it cannot hang, but a
    cancel must not wait forever on anything.
    """
    log.info("process.cancel", pid=proc.pid, signal=signal.Signals(first).name)
    os.close(keep)
    async with _heartbeating({"pid": proc.pid, "cancelling": True}):
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=grace.total_seconds() + _BACKSTOP)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def heartbeat_while(
    awaitable: Awaitable[T], details: dict[str, Any], on_cancel: Callable[[], None] | None = None
) -> T:
    """Await blocking work (a thread) while heartbeating; when cancelled, let it finish first.

    A thread cannot be killed: reporting "cancelled" while its tool still runs
    (and holds, say, a state lock) would be a lie, so the cancellation waits.
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
