"""``prodline dev`` (embedded server plus worker) and ``prodline worker``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from prodline.errors import InvalidInput, ProdlineError, WrongState
from prodline.workers.supervisor import ManagedProcess, ProcessFailed, process_alive, stop_event, terminate

from . import exit_codes

READY_FILE = "dev.json"
LOG_FILE = "dev.log"
# How long `--stop` waits for the dev process (its worker's graceful shutdown is 10 s, then
# the server's SQLite flush), and then for a left-over server, before SIGKILL.
STOP_TIMEOUT = 30


def state_dir(args) -> Path:
    return Path(args.state_dir or os.environ.get("PRODLINE_STATE_DIR") or ".prodline").resolve()


def run(args) -> int:
    folder = state_dir(args)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"--state-dir {folder} is a file, not a folder")
    if not args.headless and args.ui_port is None and args.port + 1000 > 65535:
        raise InvalidInput(f"the Web UI port would be {args.port + 1000}: give --ui-port or --headless")
    if args.stop:
        return _stop(folder)
    if args.detach:
        return _detach(args, folder)
    return asyncio.run(_serve(args, folder))


async def _serve(args, folder: Path) -> int:
    # Imported here: `--detach` and `--stop` need neither the worker nor Temporal's client.
    from prodline.workers import logs
    from prodline.workers.connect import connect, task_queue
    from prodline.workers.devserver import DevServer
    from prodline.workers.worker import build_worker

    logs.configure()
    # Plans, outputs and Terraform working data of local releases live with the server's state.
    # The artifact store and bundle cache stay the user's defaults (unless set): `release start`
    # in another shell then uploads where this worker reads, with nothing to set.
    os.environ.setdefault("PRODLINE_TERRAFORM_DATA_DIR", str(folder / "terraform"))
    server = DevServer(folder, port=args.port, ui_port=args.ui_port, ui=not args.headless)
    ready = folder / READY_FILE
    try:
        await server.start()
    except (ProcessFailed, FileNotFoundError) as exc:
        raise ProdlineError(str(exc)) from None
    try:
        client = await connect(server.address, "default")
        queue = task_queue(args.task_queue)
        stop = stop_event()
        worker = build_worker(client, queue)
        async with worker:
            for line in await _register(client, queue, args.apply):
                print(line, flush=True)
            info = {
                "pid": os.getpid(),
                "server_pid": server.pid,
                "address": server.address,
                "ui_url": server.ui_url,
                "task_queue": queue,
                "database": str(server.database),
                "artifacts": _store_location(),
            }
            ready.write_text(json.dumps(info))
            print(f"Temporal dev server at {server.address} (state in {server.database})", flush=True)
            if server.ui_url:
                print(f"Temporal UI at {server.ui_url}", flush=True)
            print(f"prodline worker on task queue {queue!r}; Ctrl-C stops both", flush=True)
            print(
                f"artifact store: {info['artifacts']} (release start must use the same: PRODLINE_ARTIFACTS)", flush=True
            )
            await stop.wait()
    finally:
        # The state file goes last: while it exists, `--stop` knows whom to wait for, and
        # the server must have released its SQLite file before anyone may start another.
        server.stop()
        ready.unlink(missing_ok=True)
    return exit_codes.SUCCEEDED


def _state(folder: Path) -> dict | None:
    """What the state file says about the last `prodline dev` of this folder (it may be stale)."""
    try:
        info = json.loads((folder / READY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _is(pid: object, *words: bytes) -> bool:
    """Whether ``pid`` is a live process whose command line holds ``words`` (a stale file's
    pid may belong to someone else by now)."""
    if not isinstance(pid, int) or not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return all(word in cmdline for word in words)


def _running(folder: Path) -> dict | None:
    """The live `prodline dev` of this state dir, if any."""
    info = _state(folder)
    return info if info is not None and _is(info["pid"], b"prodline", b"dev") else None


async def _register(client, queue: str, files: list[str]) -> list[str]:
    """Register the applications the dev server was asked to (`--apply`), as the platform team would."""
    from prodline.artifacts.store import open_store
    from prodline.client.applications import ApplicationClient

    applications = ApplicationClient(client, queue)
    lines = []
    for file in files:
        applied = await applications.apply(Path(file), "prodline dev", open_store())
        revision = applied.revision
        how = "registered" if applied.created else "unchanged"
        lines.append(f"application {revision.application}: revision {revision.number} {how} from {file}")
    return lines


def _store_location() -> str:
    from prodline.artifacts.store import open_store

    return open_store().describe()


def _detach(args, folder: Path) -> int:
    info = _running(folder)
    if info is None:
        stale = _state(folder)
        if stale is not None:
            _stop_left_server(stale)
        folder.mkdir(parents=True, exist_ok=True)
        # -P: not the current folder first on sys.path, where a checkout of another version may be.
        argv = [sys.executable, "-P", "-m", "prodline.cli", "dev", "--state-dir", str(folder), "--port", str(args.port)]
        argv += ["--ui-port", str(args.ui_port)] if args.ui_port else []
        argv += ["--headless"] if args.headless else []
        argv += ["--task-queue", args.task_queue] if args.task_queue else []
        for file in args.apply:
            argv += ["--apply", str(Path(file).resolve())]
        # Its own session, so that it outlives this command; ready once it has written its state file.
        dev = ManagedProcess("prodline dev", argv, folder / LOG_FILE, ready=lambda: _running(folder) is not None,
                             own_session=True, stop_timeout=STOP_TIMEOUT)  # fmt: skip
        try:
            dev.start(timeout=90)
        except ProcessFailed as exc:
            raise ProdlineError(f"prodline dev did not start: {exc}") from None
        info = _running(folder)
        assert info is not None  # its readiness check has just seen it
        state = "started"
    else:
        if info["address"].rsplit(":", 1)[-1] != str(args.port):
            raise WrongState(
                f"prodline dev already runs for {folder} at {info['address']}, not on port {args.port}; "
                f"stop it first (prodline dev --stop --state-dir {folder}) or use another --state-dir"
            )
        state = "already running"
    if args.json:
        print(json.dumps({"state": state, **info}))
    else:
        print(f"prodline dev {state} (pid {info['pid']}): Temporal at {info['address']}, UI at {info['ui_url']}")
        print(f"artifact store: {info.get('artifacts', '')} (release start must use the same: PRODLINE_ARTIFACTS)")
        print(f"stop it with: prodline dev --stop --state-dir {folder}")
    return exit_codes.SUCCEEDED


def _stop(folder: Path) -> int:
    """Stop the dev process and return only once its Temporal server is gone too."""
    info = _state(folder)
    if info is None or not (_is(info["pid"], b"prodline", b"dev") or _server_left(info)):
        (folder / READY_FILE).unlink(missing_ok=True)
        print(f"prodline dev is not running (state dir {folder})")
        return exit_codes.SUCCEEDED
    if _is(info["pid"], b"prodline", b"dev"):
        terminate(info["pid"], STOP_TIMEOUT)  # it stops its server, then removes the state file
    _stop_left_server(info)
    (folder / READY_FILE).unlink(missing_ok=True)
    print(f"prodline dev stopped (pid {info['pid']})")
    return exit_codes.SUCCEEDED


def _server_left(info: dict) -> bool:
    return _is(info.get("server_pid"), b"temporal", b"start-dev")


def _stop_left_server(info: dict) -> None:
    """A dev process killed without its orderly stop leaves its server running (in its own
    session), holding the SQLite file and the port: stop it too."""
    if _server_left(info):
        terminate(info["server_pid"], STOP_TIMEOUT)


def worker(args) -> int:
    return asyncio.run(_work(args))


async def _work(args) -> int:
    import structlog

    from prodline.activities.admins import describe_admin_keys
    from prodline.workers import logs
    from prodline.workers.connect import connect, task_queue
    from prodline.workers.worker import build_worker, run_until

    runtime = bool(getattr(args, "runtime", False))
    if runtime and not args.task_queue:
        raise InvalidInput(
            "--runtime serves an environment's own task queue: name it with --task-queue "
            "(the `task_queue:` of that environment in the application file)"
        )
    logs.configure()
    client = await connect(args.address, args.namespace)
    queue = task_queue(args.task_queue)
    stop = stop_event()
    # A log line like every other one on stderr (JSON when that is not a terminal).
    structlog.get_logger("prodline.worker").info(
        "worker.started",
        task_queue=queue,
        role="runtime" if runtime else "control",
        address=client.service_client.config.target_host,
        artifacts=_store_location(),
        **({} if runtime else {"admin_keys": describe_admin_keys()}),
    )
    await run_until(build_worker(client, queue, runtime=runtime), stop)
    return exit_codes.SUCCEEDED
