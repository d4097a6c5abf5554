"""Child processes prodline starts and stops: the dev server, test servers, benchmark workers.

One way for all of them: the child's output goes to a log file, :meth:`ManagedProcess.start`
returns once its readiness check passes (or raises with the tail of that log), and
:meth:`ManagedProcess.stop` sends SIGTERM, then SIGKILL after a grace period, and returns only
once the process is gone, so whatever it held (a port, a SQLite file) is free again.
Also here: free ports, and the stop event a long-running command waits on.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Self

from prodline.errors import ProdlineError

POLL_SECONDS = 0.05  # between readiness checks


class ProcessFailed(ProdlineError):
    """A supervised process exited, or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def process_alive(pid: int) -> bool:
    """Whether a process still runs (a zombie only awaits reaping: it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the command name, which is in parentheses and may hold spaces.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until a process (not necessarily our child) has exited; False if it still runs."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def stop_event() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM: what a foreground command waits on before shutting down.

    Call it inside the running event loop; Ctrl-C then stops gracefully instead of raising
    KeyboardInterrupt in the middle of whatever runs.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class ManagedProcess:
    """One child process, its output appended to ``log_file``.

    ``argv`` is a list, or a function called at each start (a command that changes between
    starts, such as one with a freshly chosen port). ``ready`` says whether the started
    process serves yet; without it, a process is ready once it runs. ``own_session`` starts
    it in its own session, so a Ctrl-C in our terminal does not reach it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str] | Callable[[], Sequence[str]],
        log_file: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
        own_session: bool = False,
        stop_timeout: float = 10.0,
    ):
        self.name = name
        self.log_file = Path(log_file)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self._argv = argv
        self._ready = ready
        self._own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessFailed(f"{self.name} is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        return list(self._argv() if callable(self._argv) else self._argv)

    def start(self, timeout: float = 60.0) -> Self:
        """Start the process and wait until it is ready; on failure it is stopped again."""
        if self.running:
            return self
        argv = self.argv()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"--- {datetime.now():%Y-%m-%d %H:%M:%S} {shlex.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self._own_session,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if self._ready is None or self._ready():
                return
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} did not become ready in {timeout:g}s:\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.proc is None:
            raise ProcessFailed(f"{self.name} is not running")
        code = self.proc.poll()
        if code is not None:
            raise ProcessFailed(f"{self.name} exited with code {code} (log: {self.log_file}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; returns once the process is gone."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate(pid: int, timeout: float) -> bool:
    """Stop a process that is not our child (SIGTERM, SIGKILL after ``timeout``); False if it was gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_gone(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        wait_gone(pid, 5)
    return True
