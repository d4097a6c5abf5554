"""Benchmark 2, scale: 1,000 releases of 200 services (5 versions each) at once on one worker.

The worker is ``python -m prodline.cli worker`` in its own process (configured
by TEMPORAL_ADDRESS and PRODLINE_TASK_QUEUE, as in production), so its peak
resident memory is read from /proc/<pid>/status (VmHWM) just before it stops.
Releases of one service with different versions run concurrently. At the end
every release must have completed as ``succeeded`` and every ledger
(service x environment) must hold exactly the five versions, all succeeded.

Releases take the path of ``prodline release start``: the application is
registered once, each service's folder is packed and uploaded once (its five
versions name the same bundle), every release resolves its plan on the worker.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from common import (
    ENVIRONMENTS,
    artifact_folders,
    client_for,
    cpu_seconds,
    dev_server,
    log,
    memory_kb,
    percentile,
    prodline_worker,
    register,
    requests_for,
    timings,
    unique,
    wait_closed,
    wait_for_pollers,
    write_project,
)
from temporalio.client import Client

from prodline.client import ReleaseClient
from prodline.contracts import DeploymentState

TARGET_WORKER_MB = 400
PREPARING = 8  # services prepared (checked, packed, uploaded) at a time before the run


async def _check_ledgers(client: Client, app: str, services: list[str], versions: list[str]) -> list[str]:
    """Every service's ledger, in every environment, holds each version once, succeeded."""
    problems: list[str] = []
    gate = asyncio.Semaphore(20)
    releases = ReleaseClient(client)

    async def check(service: str, environment: str) -> None:
        async with gate:
            records = await releases.ledger(app, service, environment)
        seen = sorted(r.version for r in records if r.state is DeploymentState.succeeded)
        if seen != sorted(versions) or len(records) != len(versions):
            problems.append(f"{service}/{environment}: {[(r.version, r.state.value) for r in records]}")

    await asyncio.gather(*(check(s, e) for s in services for e in ENVIRONMENTS))
    return problems


async def run(quick: bool = False) -> dict:
    n_services, n_versions = (40, 5) if quick else (200, 5)
    total = n_services * n_versions
    timeout = 240.0 if quick else 540.0
    async with dev_server("scale") as server, artifact_folders("scale"):
        client = await client_for(server)
        assert server.process is not None
        server_pid = server.process.pid
        with tempfile.TemporaryDirectory(prefix="prodline-bench-scale-") as tmp:
            folder = Path(tmp)
            app = unique("scale")
            services = [f"svc{i:03d}" for i in range(n_services)]
            versions = [f"1.{v}.0" for v in range(n_versions)]
            files = write_project(folder / app, app, services)
            queue = unique("bench-scale-")
            worker = prodline_worker(server.address, queue, folder / "worker.log").start()
            try:
                await wait_for_pollers(client, queue, worker)
                await register(client, queue, folder / app / "prodline.yaml")
                gate = asyncio.Semaphore(PREPARING)

                async def prepared(file: Path) -> list:
                    async with gate:
                        return await requests_for(client, file, versions)

                requests = [r for rs in await asyncio.gather(*(prepared(f) for f in files)) for r in rs]
                idle_mb = memory_kb(worker.pid, "VmRSS") / 1024
                worker_cpu, server_cpu = worker.cpu(), cpu_seconds(server_pid)
                log(
                    f"scale: {total} releases of {n_services} services x {n_versions} versions, worker pid {worker.pid}"
                )
                began = time.perf_counter()
                releases = ReleaseClient(client, queue)  # the start `prodline release start` makes
                await asyncio.gather(*(releases.start(r) for r in requests))
                start_phase = time.perf_counter() - began
                log(f"all {total} started in {start_phase:.1f}s")
                closed = await wait_closed(
                    client,
                    f"WorkflowType = 'Release' AND ProdlineApplication = '{app}'",
                    total,
                    timeout,
                    worker,
                    partial=True,
                )
                wall = time.perf_counter() - began
                worker_cpu, server_cpu = worker.cpu() - worker_cpu, cpu_seconds(server_pid) - server_cpu
                peak_mb = worker.peak_rss_mb()
                server_peak_mb = memory_kb(server_pid, "VmHWM") / 1024
                log(f"all closed after {wall:.1f}s; checking {n_services * len(ENVIRONMENTS)} ledgers")
                ledger_problems = await _check_ledgers(client, app, services, versions)
                sample = await timings(client, [r.release_id for r in requests[:: max(1, total // 20)]])
            finally:
                worker.stop()
    succeeded = closed.statuses.get("COMPLETED", 0) == total and closed.states.get("succeeded", 0) == total
    result = {
        "services": n_services,
        "versions": n_versions,
        "releases": total,
        "completed": closed.statuses.get("COMPLETED", 0),
        "statuses": closed.statuses,
        "states": closed.states,
        "ledger_problems": ledger_problems[:5],
        "stuck": closed.stuck,
        "ledgers_checked": n_services * len(ENVIRONMENTS),
        "verified": succeeded and not ledger_problems,
        "p50": percentile(closed.latencies, 50),
        "p95": percentile(closed.latencies, 95),
        "max": max(closed.latencies, default=float("nan")),
        "throughput": closed.throughput,
        "wall": wall,
        "start_phase": start_phase,
        "worker_peak_mb": peak_mb,
        "worker_idle_mb": idle_mb,
        "worker_cpu_s": worker_cpu,
        "server_cpu_s": server_cpu,
        "server_peak_mb": server_peak_mb,
        "timings": sample,
        "targets": {
            "worker_peak_mb": {"target": f"< {TARGET_WORKER_MB}", "value": peak_mb, "met": peak_mb < TARGET_WORKER_MB},
            "all_complete": {"target": "all succeeded", "value": succeeded and not ledger_problems, "met": succeeded},
        },
    }
    result["targets"]["all_complete"]["met"] = result["verified"]
    log(
        f"scale: {result['completed']}/{total} completed, verified={result['verified']}, "
        f"p50 {result['p50']:.1f}s, p95 {result['p95']:.1f}s, worker peak {peak_mb:.0f} MB, wall {wall:.1f}s"
    )
    return result
