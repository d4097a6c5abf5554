"""One benchmark worker in its own process: ``python bench/benchworker.py KIND ADDRESS QUEUE``.

KIND is ``prodline`` (``build_worker``, logs configured as ``prodline worker``
does) or ``raw`` (the baseline in raw.py). Both get the same worker options
and the same client (prodline's ``connect``, pydantic data converter), so the
only difference between them is the workflow code. Prints ``ready`` once
polling; SIGTERM shuts it down gracefully.

With ``PRODLINE_BENCH_TIMINGS=FILE`` a prodline worker times the parts of the
release path (bench/pathcost.py) and writes them to FILE when it stops; with
``PRODLINE_BENCH_FIX=NAME[,NAME]`` it runs with trial changes to the resolve
activity (bench/pathcost.py, ``bench/run.py --fix``); with
``PRODLINE_BENCH_PROFILE=FILE`` it runs under cProfile (every thread) and
writes the stats to FILE.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from typing import Any

from temporalio.worker import Worker

from prodline.workers.connect import connect
from prodline.workers.supervisor import stop_event

# The options both workers get (build_worker sets the same shutdown timeout by default).
WORKER_OPTIONS: dict[str, Any] = dict(graceful_shutdown_timeout=timedelta(seconds=10))


def build(kind: str, client, queue: str) -> Worker:
    if kind == "prodline":
        from prodline.workers import logs
        from prodline.workers.worker import build_worker

        logs.configure(json=True)
        return build_worker(client, queue, **WORKER_OPTIONS)
    from raw import RawWorkflow, noop

    return Worker(client, task_queue=queue, workflows=[RawWorkflow], activities=[noop], **WORKER_OPTIONS)


async def main(kind: str, address: str, queue: str) -> None:
    timings_file = os.environ.get("PRODLINE_BENCH_TIMINGS", "") if kind == "prodline" else ""
    timings: dict[str, list[float]] = {}
    if kind == "prodline" and os.environ.get("PRODLINE_BENCH_FIX"):
        from pathcost import apply_fixes

        apply_fixes(os.environ["PRODLINE_BENCH_FIX"])
    if timings_file:
        from pathcost import instrument

        instrument(timings)
    profile_file = os.environ.get("PRODLINE_BENCH_PROFILE", "") if kind == "prodline" else ""
    profile = None
    if profile_file:
        from pathcost import ThreadsProfile

        profile = ThreadsProfile()
    client = await connect(address, "default")
    stop = stop_event()
    async with build(kind, client, queue):
        print("ready", flush=True)
        await stop.wait()
    if timings_file:
        with open(timings_file, "w") as f:
            json.dump(timings, f)
    if profile is not None:
        profile.dump(profile_file)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # like prodline's CLI: no interpreter teardown under the Rust runtime's threads
