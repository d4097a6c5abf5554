"""Benchmark 1, engine overhead: no-op releases against plain Temporal workflows.

On one embedded server, one batch after the other, each with its own worker
process (same options, same client):

* ``raw-steps``: N plain workflows running one no-op activity per environment
  (as many activities as the release has *steps*);
* ``prodline``: N releases, one of each of N services, whose only step is ``apply: "true"``,
  staging -> production, no rules (one fresh application per batch, so its
  ledgers start empty), on the release path of ``prodline release start``: the
  application registered once (``prodline app apply``), each release resolving
  its plan from that revision and the service's bundle on the worker, each step
  running in its own copy of the bundle. Each service folder is packed and
  uploaded before the batch starts (a client cost, measured by the CLI
  benchmark, not the engine's). One service each: releases of one service take
  turns in its lanes by design, measured by bench/lanes.py;
* ``raw-activities``: N plain workflows running the very sequence of no-op
  activities a release runs, bookkeeping included: read from the history of a
  warm-up release, remote activities as activities and local ones (markers)
  as local activities.

Each batch starts all N at once after a small warm-up batch on the same
worker. Latency is start -> close as the server recorded it; throughput is N
over first start -> last close.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import (
    ENVIRONMENTS,
    WorkerProcess,
    artifact_folders,
    bench_worker,
    client_for,
    cpu_seconds,
    dev_server,
    local_activity,
    log,
    percentile,
    ratio,
    register,
    requests_for,
    steps_per_release,
    timings,
    unique,
    wait_closed,
    wait_for_pollers,
    write_project,
)
from raw import ACTIVITY, LOCAL, RAW_WORKFLOW, RawWorkflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from prodline.client import ReleaseClient
from prodline.contracts import ledger_id

TARGET_THROUGHPUT = 0.8  # prodline / raw, at least
TARGET_P50 = 1.5  # prodline / raw, at most
SAMPLE = 20  # workflows per batch whose histories say where the time went
# `bench/run.py --fix NAME`: one more batch, prodline with a trial change to the resolve activity.
FIX_VARIABLE = "PRODLINE_BENCH_FIX"
FIXED = "prodline+fix"


async def _raw_batch(client: Client, queue: str, prefix: str, n: int, plan: list[str]) -> None:
    await asyncio.gather(
        *(client.start_workflow(RawWorkflow.run, plan, id=f"{prefix}-{i:05d}", task_queue=queue) for i in range(n))
    )


async def _history_profile(client: Client, release_id: str) -> dict:
    """What one release puts in Temporal: its events, the activities it runs in order (remote
    and local), and the ledger signals its record_deployment activities send."""
    history = await client.get_workflow_handle(release_id).fetch_history()
    events = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower() for e in history.events)
    sequence: list[tuple[str, str]] = []  # (kind, activity type)
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            sequence.append((ACTIVITY, e.activity_task_scheduled_event_attributes.activity_type.name))
        elif e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and (marker := local_activity(e)):
            sequence.append((LOCAL, marker.get("activity_type", "local activity")))
    remote = Counter(t for k, t in sequence if k == ACTIVITY)
    local = Counter(t for k, t in sequence if k == LOCAL)
    return {
        "events": len(history.events),
        "by_type": dict(events.most_common()),
        "plan": [k for k, _ in sequence],
        "activities": sum(remote.values()),
        "local_activities": sum(local.values()),
        "activities_by_type": dict(remote.most_common()),
        "local_activities_by_type": dict(local.most_common()),
        "workflow_tasks": events.get("workflow_task_completed", 0),
        "search_attribute_upserts": events.get("upsert_workflow_search_attributes", 0),
        "ledger_signals": remote.get("prodline.record_deployment", 0) + local.get("prodline.record_deployment", 0),
    }


async def _ledger_profile(client: Client, app: str, request, n: int) -> dict:
    """What the measured batch's releases cost their service's ledger workflows, per release."""
    events = tasks = signals = 0
    for environment in ENVIRONMENTS:
        history = await client.get_workflow_handle(ledger_id(app, request.service, environment)).fetch_history()
        events += len(history.events)
        for e in history.events:
            tasks += e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            signals += e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    return {
        "ledger_events_per_release": events / n,
        "ledger_workflow_tasks_per_release": tasks / n,
        "ledger_signals_per_release": signals / n,
    }


async def _batch(
    client: Client,
    server_pid: int,
    worker: WorkerProcess,
    queue: str,
    name: str,
    n: int,
    warmup: int,
    start_warmup,
    start_measured,
    query: str,
    prefix: str,
    sample_ids: list[str],
    timeout: float,
) -> dict:
    await wait_for_pollers(client, queue, worker)
    await start_warmup()
    await wait_closed(client, query, warmup, timeout, worker)
    worker_cpu, server_cpu = worker.cpu(), cpu_seconds(server_pid)
    began = time.perf_counter()
    await start_measured()
    start_phase = time.perf_counter() - began
    closed = await wait_closed(client, query, warmup + n, timeout, worker, id_prefix=prefix)
    wall = time.perf_counter() - began
    worker_cpu, server_cpu = worker.cpu() - worker_cpu, cpu_seconds(server_pid) - server_cpu
    if closed.statuses != {"COMPLETED": n}:
        raise RuntimeError(f"{name}: expected {n} completed workflows, got {closed.statuses}")
    result = {
        "n": n,
        "throughput": closed.throughput,
        "p50": percentile(closed.latencies, 50),
        "p95": percentile(closed.latencies, 95),
        "max": max(closed.latencies),
        "span": closed.span,
        "wall": wall,
        "start_phase": start_phase,
        "worker_cpu_ms": 1000 * worker_cpu / n,
        "server_cpu_ms": 1000 * server_cpu / n,
        "worker_peak_mb": worker.peak_rss_mb(),
        "timings": await timings(client, sample_ids),
    }
    log(
        f"{name}: {result['throughput']:.1f} wf/s, p50 {result['p50'] * 1000:.0f} ms, "
        f"p95 {result['p95'] * 1000:.0f} ms, wall {wall:.1f}s"
    )
    return result


def _ratios(pl: dict, b: dict) -> dict:
    return {
        "throughput": ratio(pl["throughput"], b["throughput"]),
        "p50": ratio(pl["p50"], b["p50"]),
        "p95": ratio(pl["p95"], b["p95"]),
        "worker_cpu": ratio(pl["worker_cpu_ms"], b["worker_cpu_ms"]),
        "server_cpu": ratio(pl["server_cpu_ms"], b["server_cpu_ms"]),
    }


def _mean(results: list[dict]) -> dict:
    """Numeric figures averaged over the rounds; the rest (timings) from the first round."""
    combined = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            combined[key] = sum(r[key] for r in results) / len(results)
    return combined


async def _prodline(
    client: Client,
    address: str,
    server_pid: int,
    folder: Path,
    round_: int,
    n: int,
    warmup: int,
    timeout: float,
    history: dict,
    fix: str = "",
) -> dict:
    """The prodline batch: its own worker, a warm-up application and a fresh one measured
    (empty ledgers); fills ``history`` (what one release puts in Temporal) if it is empty.
    ``fix``: the worker tries these changes to the resolve activity (bench/pathcost.py)."""
    warm_app, app = unique(f"warm{round_}{'f' if fix else ''}x"), unique(f"engine{round_}{'f' if fix else ''}x")
    # One release of each of N services: releases of one service take turns in its lanes (one
    # per environment at a time, by design), which bench/lanes.py measures; this is the engine.
    warm_files = write_project(folder / warm_app, warm_app, [f"noop{i}" for i in range(warmup)])
    service_files = write_project(folder / app, app, [f"noop{i}" for i in range(n)])
    queue = unique("bench-prodline-")
    worker = bench_worker("prodline", address, queue, folder / f"{queue}.log", {FIX_VARIABLE: fix}).start()
    releases = ReleaseClient(client, queue)  # the start `prodline release start` makes
    try:
        # The platform team's `prodline app apply`, once per application, on this worker's
        # queue (the release's resolve asks the application workflow for its revision).
        await wait_for_pollers(client, queue, worker)
        for file in (warm_files[0], service_files[0]):
            await register(client, queue, file.parent.parent / "prodline.yaml")
        warm_requests = [(await requests_for(client, file, ["1.0.0"]))[0] for file in warm_files]
        requests = [(await requests_for(client, file, ["1.0.0"]))[0] for file in service_files]
        result = await _batch(
            client,
            server_pid,
            worker,
            queue,
            FIXED if fix else "prodline",
            n,
            warmup,
            lambda: asyncio.gather(*(releases.start(r) for r in warm_requests)),
            lambda: asyncio.gather(*(releases.start(r) for r in requests)),
            f"TaskQueue = '{queue}' AND WorkflowType = 'Release'",
            f"{app}.",
            [r.release_id for r in requests[:: max(1, n // SAMPLE)]],
            timeout,
        )
        if not history:
            history.update(await _history_profile(client, warm_requests[0].release_id))
            history.update(await _ledger_profile(client, app, requests[0], n))
    finally:
        worker.stop()
    return result


async def run_prodline_only(n: int, fix: str = "", warmup: int = 10, timeout: float = 300.0) -> dict:
    """One prodline batch on its own server (bench/pathcost.py instruments its worker)."""
    async with dev_server("engine") as server, artifact_folders("engine"):
        client = await client_for(server)
        assert server.process is not None
        with tempfile.TemporaryDirectory(prefix="prodline-bench-engine-") as tmp:
            return await _prodline(
                client, server.address, server.process.pid, Path(tmp), 0, n, warmup, timeout, {}, fix
            )


async def run(quick: bool = False) -> dict:
    n = 50 if quick else 200
    warmup = 5 if quick else 10
    rounds = 1 if quick else 2
    timeout = 300.0
    per_round: list[dict[str, dict]] = []
    fix = os.environ.pop(FIX_VARIABLE, "")  # only the extra batch's worker gets it
    async with dev_server("engine") as server, artifact_folders("engine"):
        client = await client_for(server)
        assert server.process is not None
        server_pid = server.process.pid
        with tempfile.TemporaryDirectory(prefix="prodline-bench-engine-") as tmp:
            folder = Path(tmp)
            history: dict = {}

            async def raw(name: str, plan: list[str]) -> dict:
                queue = unique(f"bench-{name}-")
                worker = bench_worker("raw", server.address, queue, folder / f"{queue}.log").start()
                try:
                    return await _batch(
                        client,
                        server_pid,
                        worker,
                        queue,
                        name,
                        n,
                        warmup,
                        lambda: _raw_batch(client, queue, f"warm-{queue}", warmup, plan),
                        lambda: _raw_batch(client, queue, f"run-{queue}", n, plan),
                        f"TaskQueue = '{queue}' AND WorkflowType = '{RAW_WORKFLOW}'",
                        f"run-{queue}",
                        [f"run-{queue}-{i:05d}" for i in range(0, n, max(1, n // SAMPLE))],
                        timeout,
                    ) | {"plan": plan}
                finally:
                    worker.stop()

            # The raw-steps baseline runs one activity per step the release applies.
            steps = steps_per_release(write_project(folder / "probe", unique("probe"), ["noop"])[0])
            log(f"engine overhead: N={n} per batch (+{warmup} warm-up), {rounds} round(s), server {server.address}")
            for round_ in range(rounds):
                # Every other round runs the batches in reverse, so drift in the server favours nobody.
                order = ["raw-steps", "prodline", *([FIXED] if fix else []), "raw-activities"]
                if round_ % 2:
                    order.reverse()
                batches: dict[str, dict] = {}
                for name in order:
                    if name == "prodline":
                        batches[name] = await _prodline(
                            client, server.address, server_pid, folder, round_, n, warmup, timeout, history
                        )
                    elif name == FIXED:
                        batches[name] = await _prodline(
                            client, server.address, server_pid, folder, round_, n, warmup, timeout, history, fix
                        )
                    elif name == "raw-steps":
                        batches[name] = await raw(name, [ACTIVITY] * steps)
                    else:
                        batches[name] = await raw(name, history["plan"])
                per_round.append(batches)

    names = ["raw-steps", "prodline", *([FIXED] if fix else []), "raw-activities"]
    combined = {name: _mean([r[name] for r in per_round]) for name in names}
    ratios = {base: _ratios(combined["prodline"], combined[base]) for base in ("raw-steps", "raw-activities")}
    spread = {
        base: {
            key: [min(values), max(values)]
            for key in ("throughput", "p50")
            for values in [[_ratios(r["prodline"], r[base])[key] for r in per_round]]
        }
        for base in ("raw-steps", "raw-activities")
    }
    primary = ratios["raw-steps"]
    return {
        "n": n,
        "warmup": warmup,
        "rounds": rounds,
        "release_path": "bundles",  # registered application, bundle packed once per batch (see the docstring)
        "batches": combined,
        "ratios": ratios,
        "ratio_spread": spread,
        "history": history | {"steps": steps},
        **(
            {
                "fix": fix,
                "fix_ratios": {
                    base: _ratios(combined[FIXED], combined[base]) for base in ("raw-steps", "raw-activities")
                },
            }
            if fix
            else {}
        ),
        "targets": {
            "throughput": {
                "target": f">= {TARGET_THROUGHPUT}",
                "value": primary["throughput"],
                "met": primary["throughput"] >= TARGET_THROUGHPUT,
            },
            "p50": {"target": f"<= {TARGET_P50}", "value": primary["p50"], "met": primary["p50"] <= TARGET_P50},
        },
    }
