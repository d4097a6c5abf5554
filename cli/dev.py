"""``prodline dev`` (embedded server plus worker) and ``prodline worker``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prodline.workers import logs
from prodline.workers.connect import connect, task_queue
from prodline.workers.devserver import DevServer
from prodline.workers.worker import build_worker, run_until

from . import exit_codes
from .main import CliError

READY_FILE = "dev.json"
LOG_FILE = "dev.log"


def state_dir(args) -> Path:
    return Path(args.state_dir or os.environ.get("PRODLINE_STATE_DIR") or ".prodline").resolve()


def run(args) -> int:
    folder = state_dir(args)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--state-dir {folder} is a file, not a folder", exit_codes.INVALID)
    if not args.headless and args.ui_port is None and args.port + 1000 > 65535:
        raise CliError(f"the Web UI port would be {args.port + 1000}: give --ui-port or --headless", exit_codes.INVALID)
    if args.stop:
        return _stop(folder)
    if args.detach:
        return _detach(args, folder)
    logs.configure()
    return asyncio.run(_serve(args, folder))


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(args, folder: Path) -> int:
    # Plans, outputs and Terraform working data of local releases live with the server's state.
    os.environ.setdefault("PRODLINE_ARTIFACT_DIR", str(folder / "artifacts"))
    os.environ.setdefault("PRODLINE_TERRAFORM_DATA_DIR", str(folder / "terraform"))
    server = DevServer(folder, port=args.port, ui_port=args.ui_port, ui=not args.headless)
    ready = folder / READY_FILE
    try:
        await server.start()
    except (RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    try:
        client = await connect(server.address, "default")
        queue = task_queue(args.task_queue)
        stop = _stop_event()
        worker = build_worker(client, queue)
        async with worker:
            info = {
                "pid": os.getpid(),
                "address": server.address,
                "ui_url": server.ui_url,
                "task_queue": queue,
                "database": str(server.database),
            }
            ready.write_text(json.dumps(info))
            print(f"Temporal dev server at {server.address} (state in {server.database})", flush=True)
            if server.ui_url:
                print(f"Temporal UI at {server.ui_url}", flush=True)
            print(f"prodline worker on task queue {queue!r}; Ctrl-C stops both", flush=True)
            await stop.wait()
    finally:
        ready.unlink(missing_ok=True)
        server.stop()
    return exit_codes.SUCCEEDED


def _running(folder: Path) -> dict | None:
    """The live `prodline dev` of this state dir, if any (a stale file's pid may belong to someone else now)."""
    try:
        info = json.loads((folder / READY_FILE).read_text())
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        return info if b"prodline" in cmdline and b"dev" in cmdline else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _detach(args, folder: Path) -> int:
    info = _running(folder)
    if info is None:
        folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "prodline.cli", "dev", "--state-dir", str(folder), "--port", str(args.port)]
        argv += ["--ui-port", str(args.ui_port)] if args.ui_port else []
        argv += ["--headless"] if args.headless else []
        argv += ["--task-queue", args.task_queue] if args.task_queue else []
        with (folder / LOG_FILE).open("ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while (info := _running(folder)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join((folder / LOG_FILE).read_text(errors="replace").splitlines()[-5:])
                raise CliError(f"prodline dev did not start (log: {folder / LOG_FILE}):\n{tail}")
            time.sleep(0.2)
        state = "started"
    else:
        state = "already running"
    if args.json:
        print(json.dumps({"state": state, **info}))
    else:
        print(f"prodline dev {state} (pid {info['pid']}): Temporal at {info['address']}, UI at {info['ui_url']}")
        print(f"stop it with: prodline dev --stop --state-dir {folder}")
    return exit_codes.SUCCEEDED


def _stop(folder: Path) -> int:
    info = _running(folder)
    if info is None:
        print(f"prodline dev is not running (state dir {folder})")
        return exit_codes.SUCCEEDED
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _running(folder) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        if _running(folder) is not None:
            os.kill(info["pid"], signal.SIGKILL)
    print(f"prodline dev stopped (pid {info['pid']})")
    return exit_codes.SUCCEEDED


def worker(args) -> int:
    logs.configure()
    return asyncio.run(_work(args))


async def _work(args) -> int:
    client = await connect(args.address, args.namespace)
    queue = task_queue(args.task_queue)
    stop = _stop_event()
    print(
        f"prodline worker on task queue {queue!r} at {client.service_client.config.target_host}",
        file=sys.stderr,
        flush=True,
    )
    await run_until(build_worker(client, queue), stop)
    return exit_codes.SUCCEEDED
