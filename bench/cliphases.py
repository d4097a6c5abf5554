"""Where ``prodline release start`` spends its time, one phase at a time, in a fresh interpreter.

``python bench/cliphases.py SERVICE_FILE VERSION ADDRESS QUEUE`` does what the
CLI does (parse arguments, import the command's module, build the request,
connect, start the workflow, ask whether a worker polls the queue) and prints
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
    import prodline.cli.release as release

    lap("import_release_command")
    request = release.load_request(Path(args.service_file), args.version, {}, release.initiator(None))
    lap("load_request")

    async def talk() -> None:
        client = await release.connect(args.address, "default")
        lap("connect")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import start_release  # the same start as the CLI's (imports not counted)

        mark_start = time.perf_counter()
        await start_release(client, request, queue)
        phases["start_workflow"] = time.perf_counter() - mark_start
        warn = getattr(release, "_warn_without_workers", None)  # private: may move
        if warn is not None:
            mark_describe = time.perf_counter()
            await warn(client, queue)
            phases["describe_task_queue"] = time.perf_counter() - mark_describe

    asyncio.run(talk())
    phases["total_in_process"] = time.perf_counter() - _T0
    print(json.dumps(phases), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
