"""Where ``prodline release start`` spends its time, one phase at a time, in a fresh interpreter.

``python bench/cliphases.py SERVICE_FILE VERSION ADDRESS QUEUE`` does what the
CLI does (parse arguments, import the command's module, open the artifact
store, connect, prepare the request, start the workflow, ask whether a worker
polls the queue) through the same modules (``prodline.cli.release``,
``prodline.client.prepare`` and ``prodline.client``) and prints the seconds each
phase took as JSON on stdout. ``prepare`` is the CLI's own call, timed from
outside: the registered-revision query, packing and uploading are timed by
wrapping the functions it calls; the rest of it (loading and checking the
service file against the revision) is ``check``.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import asyncio  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def _timed(spent: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, adding the seconds each call takes to ``spent[name]`` (coroutines included)."""
    if asyncio.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - began

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began

    return timed


def main() -> None:
    service_file, version, address, queue = sys.argv[1:5]
    phases: dict[str, float] = {}
    mark = _T0

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    from prodline.cli.main import build_parser

    args = build_parser().parse_args(
        ["release", "start", service_file, "--version", version, "--address", address, "--task-queue", queue]
    )
    lap("import_cli_main_and_parse")
    import prodline.cli.release  # noqa: F401  (the command's module, as the CLI imports it)
    from prodline.artifacts.store import open_store
    from prodline.cli.common import initiator
    from prodline.client import ReleaseClient
    from prodline.client import prepare as preparing

    lap("import_release_command")
    store = open_store()
    lap("open_store")

    inside: dict[str, float] = {}
    # Packing imports its modules on first use: the wrappers time that as part of packing.
    preparing.registered_revision = _timed(inside, "query_revision", preparing.registered_revision)
    preparing.pack = _timed(inside, "pack", preparing.pack)
    preparing.upload = _timed(inside, "upload", preparing.upload)

    async def talk() -> None:
        client = await ReleaseClient.connect(args.address, "default", args.task_queue)
        lap("connect")
        began = time.perf_counter()
        prepared = await preparing.prepare(
            client.temporal, Path(args.service_file), args.version, {}, initiator(None), store
        )
        whole = time.perf_counter() - began
        lap("prepare")
        phases.update({f"prepare_{k}": v for k, v in inside.items()})
        phases["prepare_check"] = whole - sum(inside.values())
        phases["uploaded_bytes"] = float(prepared.uploaded)
        started = await client.start(prepared.request)
        lap("start_workflow")
        await client.worker_problem(started.task_queue)
        lap("describe_task_queue")

    asyncio.run(talk())
    phases["total_in_process"] = time.perf_counter() - _T0
    print(json.dumps(phases), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
