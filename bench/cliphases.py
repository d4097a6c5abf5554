"""Where ``prodline release start`` spends its time, one phase at a time, in a fresh interpreter.

``python bench/cliphases.py SERVICE_FILE VERSION ADDRESS QUEUE`` does what the
CLI does (parse arguments, import the command's module, build the request,
connect, start the workflow, ask whether a worker polls the queue) through the
same modules (``prodline.cli.release`` and ``prodline.client``) and prints
the seconds each phase took as JSON on stdout.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


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
    from prodline.cli.common import initiator
    from prodline.client import ReleaseClient
    from prodline.config import load_request

    lap("import_release_command")
    request = load_request(Path(args.service_file), args.version, {}, initiator(None))
    lap("load_request")

    async def talk() -> None:
        client = await ReleaseClient.connect(args.address, "default", args.task_queue)
        lap("connect")
        started = await client.start(request)
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
