"""Shared pieces of the benchmarks: servers, worker processes, projects, timings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from prodline.artifacts.cache import CACHE_VARIABLE
from prodline.artifacts.store import STORE_VARIABLE, open_store
from prodline.client.applications import ApplicationClient
from prodline.client.prepare import prepare
from prodline.client.workers import polling
from prodline.config.release import ReleaseRequest, load_plan
from prodline.workers.connect import connect
from prodline.workers.devserver import DevServer
from prodline.workers.supervisor import ManagedProcess, free_port
from prodline.workflows import search_attributes as sa

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine while we measure -----------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _own_seconds() -> float:
    """CPU of this process and every child it has reaped (servers, workers, CLIs, their commands)."""
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class Contention:
    """How busy the machine was with *other* work while a benchmark ran (shared CI boxes)."""

    def __enter__(self) -> Contention:
        self.load_before = os.getloadavg()[0]
        self.wall, self.busy, self.own = time.monotonic(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self.wall
        busy, own = _busy_seconds() - self.busy, _own_seconds() - self.own
        self.figures = {
            "load_before": self.load_before,
            "busy_cores": busy / wall if wall else 0.0,
            "own_cores": own / wall if wall else 0.0,
            "other_cores": max(0.0, busy - own) / wall if wall else 0.0,
        }


# --- the server ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def dev_server(name: str):
    """A headless embedded Temporal on a free port with a throwaway state dir."""
    with tempfile.TemporaryDirectory(prefix=f"prodline-bench-{name}-") as tmp:
        server = DevServer(Path(tmp), port=free_port(), ui=False)
        await server.start()
        try:
            yield server
        finally:
            server.stop()


# --- processes -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (not its children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int, key: str = "VmHWM") -> int:
    """A /proc/<pid>/status memory figure (VmHWM: peak resident set) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class WorkerProcess(ManagedProcess):
    """A worker in its own process, so its CPU and peak memory are its own."""

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        return memory_kb(self.pid, "VmHWM") / 1024


def bench_worker(
    kind: str, address: str, queue: str, log_file: Path, env: dict[str, str] | None = None
) -> WorkerProcess:
    """A bench/benchworker.py process; ``env`` adds to (or, with an empty value, removes from) ours."""
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v}
    argv = [sys.executable, str(BENCH / "benchworker.py"), kind, address, queue]
    return WorkerProcess(f"{kind} worker", argv, log_file, env=environment, stop_timeout=30)


def prodline_worker(address: str, queue: str, log_file: Path) -> WorkerProcess:
    env = dict(os.environ, TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE="default", PRODLINE_TASK_QUEUE=queue)
    argv = [sys.executable, "-m", "prodline.cli", "worker"]
    return WorkerProcess("prodline worker", argv, log_file, env=env, stop_timeout=30)


async def wait_for_pollers(client: Client, queue: str, worker: WorkerProcess, timeout: float = 60) -> None:
    """Until the worker polls both the workflow and the activity task queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.check_alive()
        if await polling(client, queue, activities=True):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no worker polls {queue} after {timeout:.0f}s")


# --- projects and requests ----------------------------------------------------------------

ENVIRONMENTS = ("staging", "production")

NOOP_SERVICE = """\
service: {service}
application: {application}
releases: {{allow_downgrade: true}}  # versions of one service started at once reach the lane in any order
steps:
  - name: deploy
    command: {{apply: "true"}}
"""

TWO_ENVIRONMENTS = """\
application: {application}
environments:
  - name: staging
  - name: production
"""


def write_project(folder: Path, application: str, services: list[str]) -> list[Path]:
    """An application (staging -> production, no rules) and no-op services under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prodline.yaml").write_text(TWO_ENVIRONMENTS.format(application=application))
    files = []
    for service in services:
        (folder / service).mkdir(exist_ok=True)
        path = folder / service / "prodline.service.yaml"
        path.write_text(NOOP_SERVICE.format(service=service, application=application))
        files.append(path)
    return files


@contextlib.asynccontextmanager
async def artifact_folders(prefix: str):
    """One artifact store and one bundle cache for this run, in a temp dir: set in this process's
    environment, so that the CLIs and workers it starts use them too; restored afterwards."""
    names = (STORE_VARIABLE, "PRODLINE_ARTIFACT_DIR", CACHE_VARIABLE)
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix=f"prodline-bench-{prefix}-store-") as tmp:
        os.environ[STORE_VARIABLE] = os.environ["PRODLINE_ARTIFACT_DIR"] = str(Path(tmp) / "artifacts")
        os.environ[CACHE_VARIABLE] = str(Path(tmp) / "cache")
        try:
            yield Path(tmp)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


async def register(client: Client, queue: str, application_file: Path) -> None:
    """``prodline app apply``: the application's revision, in a workflow on ``queue`` (a worker must poll it)."""
    await ApplicationClient(client, queue).apply(application_file, "bench", open_store())


async def requests_for(client: Client, service_file: Path, versions: list[str]) -> list[ReleaseRequest]:
    """The requests ``prodline release start`` would send for ``versions`` of one service.

    The first is prepared as the CLI does (checked against the registered revision, the
    service folder packed and uploaded); the others reuse its bundle: packing the same
    folder again gives the same digest and uploads nothing, so a start pays for packing
    but the release itself does not (bench/cliphases.py measures the CLI's packing)."""
    prepared = await prepare(client, service_file, versions[0], {}, "bench", open_store())
    return [prepared.request.model_copy(update={"version": version}) for version in versions]


def steps_per_release(service_file: Path) -> int:
    """How many steps a release of the (local) service applies, all environments together."""
    return sum(len(env.steps) for env in load_plan(service_file, {}, "bench").environments)


def unique(prefix: str) -> str:
    """A DNS-label name no earlier run used (applications and services are ledger keys)."""
    return f"{prefix}{datetime.now():%m%d%H%M%S}{os.getpid() % 1000:03d}"


# --- starting and waiting --------------------------------------------------------------------


async def diagnose(client: Client, query: str, limit: int = 3) -> list[str]:
    """Why workflows matching ``query`` are still running: failing workflow tasks, pending activities."""
    notes = []
    async for wf in client.list_workflows(f"{query} AND ExecutionStatus = 'Running'", limit=limit):
        handle = client.get_workflow_handle(wf.id)
        desc = await handle.describe()
        raw = desc.raw_description
        parts = []
        if raw.HasField("pending_workflow_task"):
            parts.append(f"workflow task attempt {raw.pending_workflow_task.attempt}")
        for pending in raw.pending_activities:
            failure = pending.last_failure.message[:200] if pending.HasField("last_failure") else ""
            parts.append(f"activity {pending.activity_type.name} attempt {pending.attempt} {failure}".strip())
        history = await handle.fetch_history()
        failed = [
            e.workflow_task_failed_event_attributes
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        if failed:
            parts.append(f"{len(failed)} failed workflow tasks, last: {failed[-1].failure.message[:300]}")
        last = EventType.Name(history.events[-1].event_type).removeprefix("EVENT_TYPE_").lower()
        parts.append(f"{len(history.events)} events, last {last}")
        notes.append(f"{wf.id}: " + "; ".join(parts))
    return notes


@dataclass
class Closed:
    """What visibility says about a batch once every workflow has closed."""

    latencies: list[float]  # seconds, server start -> server close, per workflow
    span: float  # first start -> last close, seconds
    statuses: dict[str, int]
    states: dict[str, int] = field(default_factory=dict)  # ProdlineState search attribute
    stuck: list[str] = field(default_factory=list)  # when not all closed in time: why

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.span if self.span else float("nan")


async def wait_closed(
    client: Client,
    query: str,
    count: int,
    timeout: float,
    worker: WorkerProcess | None = None,
    id_prefix: str = "",
    partial: bool = False,
) -> Closed:
    """Poll visibility until ``count`` workflows matching ``query`` have closed, then read the times
    of those whose ID starts with ``id_prefix`` (warm-up workflows share the query but not the prefix).

    After ``timeout``: raise, saying why some still run, or with ``partial`` return what closed."""
    deadline = time.monotonic() + timeout
    closed = 0
    last_report = time.monotonic()
    while True:
        closed = (await client.count_workflows(f"{query} AND ExecutionStatus != 'Running'")).count
        if closed >= count:
            break
        if worker is not None:
            worker.check_alive()
        if time.monotonic() > deadline:
            if not partial:
                stuck = await diagnose(client, query)
                raise RuntimeError(
                    f"only {closed}/{count} workflows closed within {timeout:.0f}s ({query}): " + " | ".join(stuck)
                )
            break
        if time.monotonic() - last_report > 15:
            log(f"{closed}/{count} closed")
            last_report = time.monotonic()
        await asyncio.sleep(0.25)
    latencies, starts, closes = [], [], []
    statuses: dict[str, int] = {}
    states: dict[str, int] = {}
    async for wf in client.list_workflows(query, page_size=1000):
        if wf.status is None or wf.start_time is None or not wf.id.startswith(id_prefix):
            continue
        name = WorkflowExecutionStatus(wf.status).name
        statuses[name] = statuses.get(name, 0) + 1
        state = wf.typed_search_attributes.get(sa.STATE)
        if state:
            states[state] = states.get(state, 0) + 1
        if wf.close_time is not None:
            starts.append(wf.start_time)
            closes.append(wf.close_time)
            latencies.append((wf.close_time - wf.start_time).total_seconds())
    span = (max(closes) - min(starts)).total_seconds() if closes else 0.0
    stuck = [] if closed >= count else await diagnose(client, query)
    if stuck:
        log(f"only {closed}/{count} closed within {timeout:.0f}s: " + " | ".join(stuck))
    return Closed(latencies=latencies, span=span, statuses=statuses, states=states, stuck=stuck)


def _seconds(start, end) -> float:
    return (end.ToDatetime() - start.ToDatetime()).total_seconds()


def local_activity(event) -> dict | None:
    """What the marker event of a local activity says about it (type, times); None for other events."""
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return None
    attrs = event.marker_recorded_event_attributes
    if attrs.marker_name != "core_local_activity" or "data" not in attrs.details:
        return None
    return json.loads(attrs.details["data"].payloads[0].data)


async def timings(client: Client, workflow_ids: list[str]) -> dict:
    """Where a workflow's time went, averaged over a sample: per activity type and for workflow
    tasks, scheduled -> completed, and the part spent waiting in the task queue (scheduled -> started)."""
    waits: dict[str, list[float]] = {}
    runs: dict[str, list[float]] = {}
    for workflow_id in workflow_ids:
        events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
        by_id = {e.event_id: e for e in events}
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attrs = e.activity_task_completed_event_attributes
                scheduled, started = by_id[attrs.scheduled_event_id], by_id[attrs.started_event_id]
                name = scheduled.activity_task_scheduled_event_attributes.activity_type.name
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                attrs = e.workflow_task_completed_event_attributes
                scheduled, started = by_id[attrs.scheduled_event_id], by_id[attrs.started_event_id]
                name = "workflow task"
            elif (marker := local_activity(e)) is not None:
                # A local activity runs inside a workflow task (counted there); its marker's times mix
                # workflow time and worker clock, so only the count is kept.
                name = f"{marker.get('activity_type', 'local activity')} (local)"
                waits.setdefault(name, []).append(float("nan"))
                runs.setdefault(name, []).append(float("nan"))
                continue
            else:
                continue
            waits.setdefault(name, []).append(_seconds(scheduled.event_time, started.event_time))
            runs.setdefault(name, []).append(_seconds(started.event_time, e.event_time))
    return {
        name: {
            "count": len(runs[name]) / len(workflow_ids),
            # Activities: scheduled -> completed (their started event carries no separate time).
            "total_ms": 1000 * (sum(waits[name]) + sum(runs[name])) / len(runs[name]),
            "queue_ms": 1000 * sum(waits[name]) / len(waits[name]),
        }
        for name in sorted(runs)
    }


# --- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def seconds(td: timedelta) -> float:
    return td.total_seconds()


async def client_for(server: DevServer) -> Client:
    return await connect(server.address, "default")


def save_section(results: Path, text: str, begin: str, end: str, title: str) -> None:
    """Put ``text`` between a section's markers in RESULTS.md (bench/report.py keeps such sections):
    in place when the markers are there, else as a new section before "## History"."""
    content = results.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    elif "\n## History" in content:
        head, tail = content.split("\n## History", 1)
        content = f"{head.rstrip()}\n\n{title}\n\n{block}\n\n## History{tail}"
    else:
        content = f"{content.rstrip()}\n\n{title}\n\n{block}\n"
    results.write_text(content)
