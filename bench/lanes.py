"""Benchmark 9: lanes (issue 12). ``python bench/lanes.py [--only handover|scale] [--no-save] ...``

**Hand-over.** How long the next release in a lane waits once the one ahead has
left the environment, against the same hand-over made by plain Temporal
workflows, in one run (rounds alternate which goes first):

* **prodline**: an application with one environment and a service with one
  command step (``true``; ``releases: {allow_downgrade: true}`` so every version
  deploys whatever order the lane gives). Release 0 takes the lane and holds it
  (its step waits for a file) until the other N releases, started together,
  all wait in the ledger's queue; then it goes, and the N hand-overs follow,
  each one ledger hop: release A records its deployment (the
  ``prodline.record_deployment`` local activity signals the ledger), the ledger
  grants the turn (a ``turn`` signal), release B schedules its step.
* **baseline**: N+1 workflows (defined here) each waiting for a signal, then
  running one trivial activity, then signalling the next
  (``workflow.get_external_workflow_handle(next).signal``); the first is
  signalled by the benchmark once all wait.

Every figure comes from the histories' event times (the server's clock):
*hand-over* is A's leave (prodline: the marker of its record's local activity;
baseline: its SignalExternalWorkflowExecutionInitiated event) to B's step
activity started (ActivityTaskStarted); *end to end* starts earlier, at A's
last activity completed, so it also counts A's own workflow task. The
hand-over's parts (A's task, the ledger's task, B's task, queueing) come from
the release, the ledger and the chain histories. Target: median hand-over at
most 1.5x the baseline's.

**Scale.** S services x V versions in one environment, at most Q releases per
service in flight (holding or queued in the lane): a service's next version
starts once one of its releases closed, and (unless ``--unordered``) once the
version before it entered the lane, as versions arriving from CI one after the
other do. Each deploy appends ``start V`` and ``end V`` to a per-service log
around a short sleep. Checked at the end: every log is pairs of the same
version (no interleaving), in the order the ledger recorded them, every release
succeeded in version order, and the newest version is live. With
``--unordered`` a service's Q versions race to the lane: an older one that gets
its turn after a newer one is refused (a release never deploys an older
version over a newer one), so then the check is that the versions deployed
rise and every other release failed with that refusal. The worker is
``prodline worker`` in its own process; its peak resident memory (VmHWM) is
read from /proc before it stops.

A run that stops moving (no release closes for ``--stall`` seconds) stops
starting releases and names each stuck lane: who holds it, what it was told.

Like bench/run.py, it measures a copy of prodline taken at the start (``--live``:
the working tree as it is). ``--trial-fix NAME`` measures that copy with a
change proposed for the workflows (``TRIAL_FIXES``; the working tree is never
touched), reported as such in blocks of its own.

Prints the section and writes it into bench/RESULTS.md between its markers
(each part its own block; ``--no-save``: print only).
"""

from __future__ import annotations

import os
import sys

from temporalio import activity, workflow

# Trial changes ``--trial-fix`` makes to the measured copy of prodline (never to the working tree):
# NAME -> (file in the package, text there now, what it becomes). See the report for why.
TRIAL_FIXES: dict[str, tuple[str, str, str]] = {
    # Empty: the three measured for issue 12 (the freeze gate as a local activity, its re-check only
    # after a wait, no "who is ahead" to every waiting release at each grant) are in the workflows
    # now, behind the `quick-handover` and `waiting-behind` patches (RESULTS.md, section 9).
}


def _launch() -> None:
    """``python bench/lanes.py``: measure a copy of prodline (snapshot.py), run as the module ``lanes``."""
    import argparse

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import snapshot

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--trial-fix", default="")
    known, _ = parser.parse_known_args()
    copy = None
    status = 2
    try:
        if not known.live:
            copy, code = snapshot.activate()
            print(f"bench: measuring a copy of prodline in {copy} (code {code})", file=sys.stderr, flush=True)
            os.environ["PRODLINE_BENCH_CODE"] = code  # for the report: the sources measured
        for name in filter(None, known.trial_fix.split(",")):
            if name not in TRIAL_FIXES or copy is None:
                print(f"--trial-fix {name}: choose from {', '.join(TRIAL_FIXES)} (not with --live)", file=sys.stderr)
                return
            relative, before, after = TRIAL_FIXES[name]
            path = copy / "prodline" / relative
            text = path.read_text()
            if before not in text:
                print(
                    f"--trial-fix {name}: {relative} has changed; the trial change no longer applies", file=sys.stderr
                )
                return
            path.write_text(text.replace(before, after, 1))
            print(f"bench: trial change {name} applied to the copy's {relative}", file=sys.stderr, flush=True)
        # The baseline workflow's sandbox imports this file by its module name, never as __main__.
        import lanes

        status = lanes.main()
    except SystemExit as exc:  # argparse: --help, or a usage error
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        if copy is not None:
            import shutil

            shutil.rmtree(copy, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # like prodline's CLI: no interpreter teardown under the Rust runtime's threads


if __name__ == "__main__":
    _launch()

# This module is also the sandboxed baseline workflow's module: the sandbox imports it again
# for every workflow run, so everything but temporalio is passed through (imported once).
with workflow.unsafe.imports_passed_through():
    import argparse
    import asyncio
    import contextlib
    import itertools
    import json
    import platform
    import tempfile
    import time
    from dataclasses import dataclass
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from typing import Any

    from common import (
        Contention,
        WorkerProcess,
        artifact_folders,
        client_for,
        cpu_seconds,
        dev_server,
        local_activity,
        log,
        memory_kb,
        percentile,
        register,
        requests_for,
        save_section,
        unique,
        wait_for_pollers,
    )
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import HistoryEvent
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.worker import Worker

    from prodline.activities.ledger import read_lane
    from prodline.client import ReleaseClient
    from prodline.config.release import ReleaseRequest
    from prodline.config.versions import is_older
    from prodline.contracts import (
        APPLY_STEP,
        EVALUATE_RULE,
        LANE_REQUEST,
        RECORD_DEPLOYMENT,
        RECORD_SIGNAL,
        STATUS_QUERY,
        TURN_SIGNAL,
        DeploymentState,
        ledger_id,
    )
    from prodline.workers import logs
    from prodline.workers.sandbox import WORKFLOW_RUNNER
    from prodline.workers.worker import build_worker
    from prodline.workflows import search_attributes as sa

TARGET = 1.5  # prodline's median hand-over / the baseline's
ENVIRONMENT = "production"
CHAIN_WORKFLOW = "BenchLaneChain"
GO_SIGNAL = "go"
PARTS = ("handover", "scale")
TITLE = "## 9. Lanes"


# --- the baseline: plain workflows handing over by signal -----------------------------------


@activity.defn(name="bench.lanes.step")
async def chain_step(index: int) -> int:
    return index


@workflow.defn(name=CHAIN_WORKFLOW)
class ChainWorkflow:
    """Waits for its turn (a signal), runs its step, hands over to the next by signalling it."""

    def __init__(self) -> None:
        self._go = False

    @workflow.signal(name=GO_SIGNAL)
    def go(self) -> None:
        self._go = True

    @workflow.run
    async def run(self, next_id: str) -> None:
        await workflow.wait_condition(lambda: self._go)
        await workflow.execute_activity(chain_step, 0, start_to_close_timeout=timedelta(seconds=30))
        if next_id:
            await workflow.get_external_workflow_handle(next_id).signal(GO_SIGNAL)


# --- histories ---------------------------------------------------------------------------------


def _at(event: HistoryEvent) -> float:
    return event.event_time.ToDatetime().timestamp()


def _payload(payloads: Any) -> Any:
    """The first argument of a signal (JSON, as prodline's data converter writes it)."""
    items = list(payloads.payloads)
    return json.loads(items[0].data) if items else None


async def history(client: Client, workflow_id: str, run_id: str | None = None) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events)


async def all_runs(client: Client, workflow_id: str) -> list[HistoryEvent]:
    """Every run's events, oldest run first (a ledger continues as new now and then)."""
    runs = [wf async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    runs.sort(key=lambda wf: wf.start_time)
    return [e for wf in runs for e in await history(client, workflow_id, wf.run_id)]


def task_started_before(events: list[HistoryEvent], event_id: int) -> HistoryEvent:
    """The workflow task whose completion wrote the event ``event_id``."""
    return next(
        e
        for e in reversed(events)
        if e.event_id < event_id and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    )


def task_started_after(events: list[HistoryEvent], event_id: int) -> HistoryEvent:
    """The first workflow task started after the event ``event_id`` (the one that saw it)."""
    return next(
        e for e in events if e.event_id > event_id and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    )


@dataclass
class Activity:
    scheduled: HistoryEvent
    started: HistoryEvent | None = None
    completed: HistoryEvent | None = None


def activities(events: list[HistoryEvent], name: str) -> list[Activity]:
    """The activities of type ``name``, in the order they were scheduled."""
    found: dict[int, Activity] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == name:
                found[e.event_id] = Activity(e)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = found.get(e.activity_task_started_event_attributes.scheduled_event_id)
            if a is not None:
                a.started = e
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = found.get(e.activity_task_completed_event_attributes.scheduled_event_id)
            if a is not None:
                a.completed = e
    return list(found.values())


def only(items: list[Activity], what: str) -> Activity:
    if len(items) != 1 or items[0].started is None or items[0].completed is None:
        raise RuntimeError(f"{what}: expected one completed activity, found {len(items)}")
    return items[0]


def marker(events: list[HistoryEvent], activity_type: str) -> HistoryEvent:
    """The (last) marker of a local activity of that type."""
    found = [e for e in events if (m := local_activity(e)) is not None and m.get("activity_type") == activity_type]
    if not found:
        raise RuntimeError(f"no {activity_type} marker in the history")
    return found[-1]


def signals(events: list[HistoryEvent], name: str) -> list[tuple[HistoryEvent, Any]]:
    """The signals ``name`` received, with their first argument."""
    out = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = e.workflow_execution_signaled_event_attributes
            if attrs.signal_name == name:
                out.append((e, _payload(attrs.input)))
    return out


def sent(events: list[HistoryEvent], name: str) -> list[tuple[HistoryEvent, str, Any]]:
    """The signals ``name`` this workflow sent: event, target workflow ID, argument."""
    out = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            attrs = e.signal_external_workflow_execution_initiated_event_attributes
            if attrs.signal_name == name:
                out.append((e, attrs.workflow_execution.workflow_id, _payload(attrs.input)))
    return out


# --- the hand-over: prodline -------------------------------------------------------------------

HANDOVER_SERVICE = """\
service: {service}
application: {application}
releases: {{allow_downgrade: true}}
steps:
  - name: deploy
    command:
      # Release {first} holds the lane until the benchmark lets it go; the others run `true`.
      apply: 'if [ "$PRODLINE_VERSION" = "{first}" ]; then while [ ! -e "{gate}" ]; do sleep 0.02; done; fi; true'
"""


async def until(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def prodline_round(client: Client, queue: str, root: Path, app: str, n: int) -> list[dict[str, float]]:
    service = unique("handover")
    folder = root / service
    folder.mkdir()
    gate = folder / "go"
    versions = [f"1.0.{i}" for i in range(n + 1)]
    service_file = folder / "prodline.service.yaml"
    service_file.write_text(HANDOVER_SERVICE.format(service=service, application=app, first=versions[0], gate=gate))
    requests = await requests_for(client, service_file, versions)
    releases = ReleaseClient(client, queue)
    first, rest = requests[0], requests[1:]
    await releases.start(first)

    async def holds() -> bool:
        lane = await read_lane(client, app, service, ENVIRONMENT)
        return lane.holder is not None and lane.holder.release_id == first.release_id

    await until(f"{first.release_id} taking the lane", holds)
    await asyncio.gather(*(releases.start(r) for r in rest))

    async def all_queued() -> bool:
        return len((await read_lane(client, app, service, ENVIRONMENT)).queue) == n

    await until(f"{n} releases queued behind {first.release_id}", all_queued)
    gate.touch()
    # A release that does not succeed raises here (WorkflowFailureError, with its reason).
    await asyncio.gather(*(client.get_workflow_handle(r.release_id).result() for r in requests))
    return await prodline_handovers(client, app, service, [r.release_id for r in requests])


async def prodline_handovers(client: Client, app: str, service: str, ids: list[str]) -> list[dict[str, float]]:
    """Each hand-over of the lane, from the releases' and the ledger's histories."""
    events = {i: await history(client, i) for i in ids}
    ledger = await all_runs(client, ledger_id(app, service, ENVIRONMENT))
    applies = {i: only(activities(events[i], APPLY_STEP), i) for i in ids}
    order = sorted(ids, key=lambda i: _at(applies[i].started))  # type: ignore[arg-type]
    records = {arg["release_id"]: e for e, arg in signals(ledger, RECORD_SIGNAL)}
    grants = {target: e for e, target, arg in sent(ledger, TURN_SIGNAL) if arg.get("granted")}
    waiting_tells = [e for e, _, arg in sent(ledger, TURN_SIGNAL) if not arg.get("granted")]
    out = []
    for a, b in itertools.pairwise(order):
        ea, eb = events[a], events[b]
        done, step_b = applies[a].completed, applies[b]
        assert done is not None and step_b.started is not None
        record_marker = marker(ea, RECORD_DEPLOYMENT)
        a_task = task_started_before(ea, record_marker.event_id)
        record = records[a]
        ledger_task = task_started_after(ledger, record.event_id)
        grant = grants[b]
        granted = next(e for e, arg in signals(eb, TURN_SIGNAL) if arg.get("granted"))
        b_task = task_started_after(eb, granted.event_id)
        # Rules B evaluates between its turn and its step (the freeze check every environment has).
        rules = [
            r.completed
            for r in activities(eb, EVALUATE_RULE)
            if granted.event_id < r.scheduled.event_id < step_b.scheduled.event_id and r.completed is not None
        ]
        rules_done = _at(rules[-1]) if rules else _at(b_task)
        local_rules = [
            e
            for e in eb
            if granted.event_id < e.event_id < step_b.scheduled.event_id
            and (m := local_activity(e)) is not None
            and m.get("activity_type") == EVALUATE_RULE
        ]
        start = _at(step_b.started)
        if start < _at(done):
            raise RuntimeError(f"{b} started its step before {a} finished its own: the lane let them overlap")
        # How many turn signals the ledger's task that granted B's turn sent (B's and the waiting ones').
        same_task = [e for e in waiting_tells if task_started_before(ledger, e.event_id) is ledger_task]
        out.append(
            {
                "handover": start - _at(record_marker),
                # What the hand-over would take if B had no rules to evaluate first (the lane alone).
                "handover without B's rules": start - _at(record_marker) - (rules_done - _at(b_task)),
                "end to end": start - _at(done),
                "A: step done -> its task starts": _at(a_task) - _at(done),
                "A: task starts -> ledger has the record": _at(record) - _at(a_task),
                "ledger: record -> its task starts": _at(ledger_task) - _at(record),
                "ledger: task -> turn sent to B (task completes)": _at(grant) - _at(ledger_task),
                "turn sent -> B has it": _at(granted) - _at(grant),
                "B: turn -> its task starts": _at(b_task) - _at(granted),
                "B: task starts -> its rules done": rules_done - _at(b_task),
                "B: rules done -> step scheduled": _at(step_b.scheduled) - rules_done,
                "B: step scheduled -> started": start - _at(step_b.scheduled),
                "rule activities before B's step": float(len(rules)),
                "rule local activities before B's step": float(len(local_rules)),
                "A: marker after ledger has the record": _at(record_marker) - _at(record),
                "turn signals sent with B's": float(len(same_task)),
            }
        )
    return out


# --- the hand-over: the baseline ---------------------------------------------------------------


async def baseline_round(client: Client, queue: str, n: int) -> list[dict[str, float]]:
    prefix = unique("chain-")
    ids = [f"{prefix}-{i:03d}" for i in range(n + 1)]
    handles = [
        await client.start_workflow(CHAIN_WORKFLOW, nxt, id=i, task_queue=queue)
        for i, nxt in zip(ids, [*ids[1:], ""], strict=True)
    ]

    async def all_waiting() -> bool:
        for i in ids:
            events = await history(client, i)
            if not any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events):
                return False
        return True

    await until(f"{n + 1} chain workflows waiting", all_waiting)
    await handles[0].signal(GO_SIGNAL)
    await asyncio.gather(*(h.result() for h in handles))
    events = {i: await history(client, i) for i in ids}
    out = []
    for a, b in itertools.pairwise(ids):
        ea, eb = events[a], events[b]
        step_a = only(activities(ea, "bench.lanes.step"), a)
        step_b = only(activities(eb, "bench.lanes.step"), b)
        assert step_a.completed is not None and step_b.started is not None
        signal, _, _ = sent(ea, GO_SIGNAL)[0]
        a_task = task_started_before(ea, signal.event_id)
        got, _ = signals(eb, GO_SIGNAL)[0]
        b_task = task_started_after(eb, got.event_id)
        start = _at(step_b.started)
        out.append(
            {
                "handover": start - _at(signal),
                "end to end": start - _at(step_a.completed),
                "A: step done -> its task starts": _at(a_task) - _at(step_a.completed),
                "A: task starts -> signal sent (task completes)": _at(signal) - _at(a_task),
                "signal sent -> B has it": _at(got) - _at(signal),
                "B: signal -> its task starts": _at(b_task) - _at(got),
                "B: task starts -> step scheduled": _at(step_b.scheduled) - _at(b_task),
                "B: step scheduled -> started": start - _at(step_b.scheduled),
            }
        )
    return out


async def measure_handover(rounds: int, n: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {"prodline": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="prodline-bench-lanes-") as tmp:
        root = Path(tmp)
        # The in-process worker logs as `prodline worker` does (JSON), into a file rather than over the report.
        logs.configure(json=True, stream=(root / "worker.log").open("a"))
        async with artifact_folders("lanes"), dev_server("lanes") as server:
            client = await client_for(server)
            queue, chain_queue = unique("bench-lanes-"), unique("bench-chain-")
            baseline_worker = Worker(
                client,
                task_queue=chain_queue,
                workflows=[ChainWorkflow],
                activities=[chain_step],
                workflow_runner=WORKFLOW_RUNNER,  # the same sandbox as prodline's workflows
                graceful_shutdown_timeout=timedelta(seconds=10),
            )
            async with build_worker(client, queue), baseline_worker:
                app = unique("lanes")
                app_file = root / "prodline.yaml"
                app_file.write_text(f"application: {app}\nenvironments:\n  - name: {ENVIRONMENT}\n")
                await register(client, queue, app_file)  # `prodline app apply`, once: untimed
                # Round 0 warms both paths up (imports, the sandbox, caches) and is dropped.
                for i in range(rounds + 1):
                    order = ("prodline", "baseline") if i % 2 else ("baseline", "prodline")
                    for path in order:
                        if path == "prodline":
                            got = await prodline_round(client, queue, root, app, n)
                        else:
                            got = await baseline_round(client, chain_queue, n)
                        if i:
                            samples[path] += got
                    if i:
                        figures = ", ".join(
                            f"{p} {percentile([s['handover'] for s in samples[p][-n:]], 50) * 1000:.1f} ms"
                            for p in samples
                        )
                        log(f"hand-over round {i}/{rounds}: medians {figures}")
    return {"rounds": rounds, "n": n, "samples": samples}


# --- scale ---------------------------------------------------------------------------------------

SCALE_SERVICE = """\
service: {service}
application: {application}
{releases}steps:
  - name: deploy
    command:
      apply: 'echo "start $PRODLINE_VERSION" >> "{log}"; sleep {pause}; echo "end $PRODLINE_VERSION" >> "{log}"'
"""


@dataclass(frozen=True)
class Scale:
    services: int = 50
    versions: int = 20
    queued: int = 5  # releases of one service in flight at a time (holding the lane or waiting)
    pause: float = 0.02  # seconds between a deploy's "start" and "end" lines
    unordered: bool = False  # start a service's next version without waiting for the last to enter the lane
    timeout: float = 1800.0  # seconds for the whole run
    stall: float = 90.0  # seconds without any release closing: the run stops and reports the stuck lanes
    keep: str = ""  # a folder for the histories of stuck lanes (their holder's and their ledger's)


def scale_worker(address: str, queue: str, folder: Path) -> WorkerProcess:
    """`prodline worker` in its own process, started in ``folder``: a child started in the repository
    would import prodline from the working tree (the current directory goes first on sys.path),
    not from the copy being measured (snapshot.py, PYTHONPATH)."""
    env = dict(os.environ, TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE="default", PRODLINE_TASK_QUEUE=queue)
    argv = [sys.executable, "-m", "prodline.cli", "worker"]
    return WorkerProcess("prodline worker", argv, folder / "worker.log", env=env, cwd=folder, stop_timeout=30)


async def entered(client: Client, release_id: str) -> None:
    """Until the release has asked the ledger for its turn (its lane request's marker), or closed."""
    async for event in client.get_workflow_handle(release_id).fetch_history_events(wait_new_event=True):
        m = local_activity(event)
        if m is not None and m.get("activity_type") == LANE_REQUEST:
            return


async def drive(
    client: Client, releases: ReleaseClient, requests: list[ReleaseRequest], setup: Scale, ends: dict[str, str]
) -> None:
    """One service's versions, oldest first, at most ``queued`` in flight."""
    window = asyncio.Semaphore(setup.queued)
    running = []

    async def finish(request: ReleaseRequest) -> None:
        try:
            await client.get_workflow_handle(request.release_id).result()
            ends[request.release_id] = "succeeded"
        except WorkflowFailureError as exc:
            cause = exc.cause
            ends[request.release_id] = getattr(cause, "message", "") or str(cause)
        finally:
            window.release()

    try:
        for request in requests:
            await window.acquire()
            await releases.start(request)
            if not setup.unordered:
                await entered(client, request.release_id)
            running.append(asyncio.create_task(finish(request)))
        await asyncio.gather(*running)
    finally:  # stopped (a stuck run): stop waiting for the rest
        for task in running:
            task.cancel()


def log_problems(service: str, path: Path) -> tuple[list[str], list[str]]:
    """The versions the log shows deployed, in order, and what is wrong with it (interleaving)."""
    lines = path.read_text().splitlines() if path.exists() else []
    problems = []
    if len(lines) % 2:
        problems.append(f"{service}: odd number of lines ({len(lines)})")
    for start, end in zip(lines[::2], lines[1::2], strict=False):
        if not (start.startswith("start ") and end.startswith("end ") and start.split()[1] == end.split()[1]):
            problems.append(f"{service}: interleaved: {start!r} then {end!r}")
            break
    return [line.split()[1] for line in lines[::2]], problems


async def check_service(
    client: Client, app: str, service: str, versions: list[str], log_file: Path, ends: dict[str, str], unordered: bool
) -> list[str]:
    deployed, problems = log_problems(service, log_file)
    records = await ReleaseClient(client).ledger(app, service, ENVIRONMENT)
    recorded = [r.version for r in records if r.state is DeploymentState.succeeded]
    if deployed != recorded:
        problems.append(f"{service}: log order {deployed} != ledger order {recorded}")
    if len(records) != len(recorded):
        problems.append(f"{service}: records not succeeded: {[(r.version, r.state.value) for r in records]}")
    ids = {v: f"{app}.{service}@{v}" for v in versions}
    if unordered:
        if any(not is_older(x, y) for x, y in itertools.pairwise(deployed)):
            problems.append(f"{service}: deployed out of version order: {deployed}")
        odd = [v for v in versions if v not in deployed and "is older than" not in ends.get(ids[v], "")]
        if odd:
            problems.append(f"{service}: not deployed, and not for a downgrade: {[(v, ends.get(ids[v])) for v in odd]}")
    else:
        if deployed != versions:
            problems.append(f"{service}: deployed {deployed}, expected every version in order")
        failed = [(v, ends.get(ids[v])) for v in versions if ends.get(ids[v]) != "succeeded"]
        if failed:
            problems.append(f"{service}: did not succeed: {failed[:3]}")
    live = recorded[-1] if recorded else None
    if live != versions[-1]:
        problems.append(f"{service}: live is {live}, not the newest {versions[-1]}")
    return problems


async def measure_scale(setup: Scale) -> dict[str, Any]:
    total = setup.services * setup.versions
    async with dev_server("lanes-scale") as server, artifact_folders("lanes-scale"):
        client = await client_for(server)
        assert server.process is not None
        server_pid = server.process.pid
        with tempfile.TemporaryDirectory(prefix="prodline-bench-lanes-scale-") as tmp:
            root = Path(tmp)
            app = unique("lanescale")
            folder = root / app
            folder.mkdir()
            (folder / "prodline.yaml").write_text(f"application: {app}\nenvironments:\n  - name: {ENVIRONMENT}\n")
            services = [f"svc{i:03d}" for i in range(setup.services)]
            versions = [f"1.{v}.0" for v in range(setup.versions)]
            logs = {s: root / "logs" / f"{s}.log" for s in services}
            (root / "logs").mkdir()
            files = []
            for s in services:
                (folder / s).mkdir()
                path = folder / s / "prodline.service.yaml"
                path.write_text(
                    SCALE_SERVICE.format(service=s, application=app, releases="", log=logs[s], pause=setup.pause)
                )
                files.append(path)
            queue = unique("bench-lanes-scale-")
            worker = scale_worker(server.address, queue, root).start()
            try:
                await wait_for_pollers(client, queue, worker)
                await register(client, queue, folder / "prodline.yaml")
                gate = asyncio.Semaphore(8)

                async def prepared(file: Path) -> list[ReleaseRequest]:
                    async with gate:
                        return await requests_for(client, file, versions)

                requests = await asyncio.gather(*(prepared(f) for f in files))
                idle_mb = memory_kb(worker.pid, "VmRSS") / 1024
                worker_cpu, server_cpu = worker.cpu(), cpu_seconds(server_pid)
                log(
                    f"lanes scale: {total} releases, {setup.services} services x {setup.versions} versions, "
                    f"{setup.queued} in flight per service{' (unordered)' if setup.unordered else ''}"
                )
                releases = ReleaseClient(client, queue)
                ends: dict[str, str] = {}
                began = time.perf_counter()
                driving = asyncio.ensure_future(
                    asyncio.gather(*(drive(client, releases, rs, setup, ends) for rs in requests))
                )
                stuck = await watch(client, app, driving, ends, requests, setup)
                wall = time.perf_counter() - began
                worker.check_alive()
                worker_cpu, server_cpu = worker.cpu() - worker_cpu, cpu_seconds(server_pid) - server_cpu
                peak_mb = worker.peak_rss_mb()
                server_peak_mb = memory_kb(server_pid, "VmHWM") / 1024
                log(f"{len(ends)}/{total} closed after {wall:.1f}s; checking logs and ledgers")
                finished = [
                    s for s, rs in zip(services, requests, strict=True) if all(r.release_id in ends for r in rs)
                ]
                problems = [
                    p
                    for s in finished
                    for p in await check_service(client, app, s, versions, logs[s], ends, setup.unordered)
                ]
                latencies = await closed_latencies(client, app)
                done = [(s, rs) for s, rs in zip(services, requests, strict=True) if s in finished]
                per_release = await costs(client, app, done[:3])
            finally:
                worker.stop()
    states: dict[str, int] = {}
    for end in ends.values():
        key = "succeeded" if end == "succeeded" else "refused (older)" if "is older than" in end else "failed"
        states[key] = states.get(key, 0) + 1
    return {
        "setup": setup,
        "releases": total,
        "states": states,
        "problems": problems,
        "stuck": stuck,
        "closed": len(ends),
        "per_release": per_release,
        "wall": wall,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "worker_peak_mb": peak_mb,
        "worker_idle_mb": idle_mb,
        "worker_cpu_s": worker_cpu,
        "server_cpu_s": server_cpu,
        "server_peak_mb": server_peak_mb,
    }


async def watch(
    client: Client,
    app: str,
    driving: asyncio.Future,
    ends: dict[str, str],
    requests: list[list[ReleaseRequest]],
    setup: Scale,
) -> list[str]:
    """Until every release closed ([]), or none closed for ``stall`` seconds (or ``timeout`` passed):
    then stop starting more and say which lanes are stuck, and why."""
    total = sum(len(rs) for rs in requests)
    began = last_change = last_report = time.monotonic()
    seen = 0
    while True:
        done, _ = await asyncio.wait({driving}, timeout=1)
        if done:
            driving.result()  # raises what a driver raised
            return []
        now = time.monotonic()
        if len(ends) != seen:
            seen, last_change = len(ends), now
        if now - last_report > 15:
            log(f"{len(ends)}/{total} closed")
            last_report = now
        if now - last_change > setup.stall or now - began > setup.timeout:
            break
    log(f"no release closed for {now - last_change:.0f}s ({len(ends)}/{total} closed): looking at the lanes")
    driving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await driving
    stuck = []
    for rs in requests:
        if all(r.release_id in ends for r in rs):
            continue
        service = rs[0].service
        lane = await read_lane(client, app, service, ENVIRONMENT)
        holder = lane.holder.release_id if lane.holder else ""
        why = "nobody holds the lane"
        if holder:
            turns = [arg for _, arg in signals(await history(client, holder), TURN_SIGNAL)]
            told = ", ".join("granted" if t.get("granted") else "waiting" for t in turns)
            why = f"{holder} holds it; the turns it received: {told}"
            if any(t.get("granted") for t in turns) and not turns[-1].get("granted"):
                why += " (granted, then a stale 'who is ahead': it waits while holding the lane)"
            with contextlib.suppress(Exception):  # a closed or stuck workflow may not answer
                status = await client.get_workflow_handle(holder).query(STATUS_QUERY)
                waiting = [e.get("waiting_on") for e in status.get("environments", []) if e.get("waiting_on")]
                why += f"; its status: {status.get('state')}, {'; '.join(waiting) or 'waiting on nothing'}"
            if setup.keep:
                folder = Path(setup.keep)
                folder.mkdir(parents=True, exist_ok=True)
                for workflow_id in (holder, ledger_id(app, service, ENVIRONMENT)):
                    fetched = await client.get_workflow_handle(workflow_id).fetch_history()
                    (folder / f"{workflow_id.replace(':', '_')}.json").write_text(fetched.to_json())
        stuck.append(f"{service}: {len(lane.queue)} queued; {why}")
    return stuck or [f"no release closed for {setup.stall:.0f}s, yet no lane looks stuck"]


async def costs(client: Client, app: str, sample: list[tuple[str, list[ReleaseRequest]]]) -> dict:
    """What one release costs Temporal, averaged over the releases of a few services (all of theirs):
    its workflow tasks, the `turn` signals it received, and its share of its ledger's tasks and signals."""
    counts = {"release tasks": 0, "turns received": 0, "activities": 0, "ledger tasks": 0, "ledger signals sent": 0}
    releases = 0
    for service, rs in sample:
        for r in rs:
            events = await history(client, r.release_id)
            counts["release tasks"] += sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events)
            counts["turns received"] += len(signals(events, TURN_SIGNAL))
            counts["activities"] += sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)
            releases += 1
        ledger = await all_runs(client, ledger_id(app, service, ENVIRONMENT))
        counts["ledger tasks"] += sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in ledger)
        counts["ledger signals sent"] += len(sent(ledger, TURN_SIGNAL))
    return {k: v / releases for k, v in counts.items()} if releases else {}


async def closed_latencies(client: Client, app: str) -> list[float]:
    """Start -> close of every release (seconds): queueing in the lane included."""
    out = []
    query = f"WorkflowType = 'Release' AND {sa.APPLICATION.name} = '{app}'"
    async for wf in client.list_workflows(query, page_size=1000):
        if wf.close_time is not None and wf.start_time is not None:
            out.append((wf.close_time - wf.start_time).total_seconds())
    return out


# --- the report ------------------------------------------------------------------------------------


def measured() -> str:
    """The commit (``+``: uncommitted changes outside bench/) and the digest of the sources measured."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        return out.stdout.strip()

    dirty = "+" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench") else ""
    code = os.environ.get("PRODLINE_BENCH_CODE", "")
    return f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}" + (
        f" (sources {code})" if code else " (working tree)"
    )


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def stats(samples: list[dict[str, float]], key: str) -> tuple[float, float]:
    values = [s[key] for s in samples]
    return percentile(values, 50), percentile(values, 90)


def handover_report(result: dict[str, Any], command: str) -> str:
    prodline, baseline = result["samples"]["prodline"], result["samples"]["baseline"]
    p50, p90 = stats(prodline, "handover")
    b50, b90 = stats(baseline, "handover")
    e50, e90 = stats(prodline, "end to end")
    c50, c90 = stats(baseline, "end to end")
    n50, n90 = stats(prodline, "handover without B's rules")
    ratio = p50 / b50
    verdict = "met" if ratio <= TARGET else "missed"
    lines = [
        f"_Run of {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {measured()}: {result['rounds']} rounds of {result['n']} hand-overs each "
        f"(after a warm-up round), {len(prodline)} hand-overs per path; {machine()}, load "
        f"{os.getloadavg()[0]:.1f} at the end._",
        "",
        "One environment, a service with one command step (`true`); release 0 holds the lane until the other "
        f"{result['n']} (started together) all wait in the ledger's queue, then the hand-overs follow one another. "
        "Baseline: plain workflows that wait for a signal, run one trivial activity and signal the next. From the "
        "histories: **hand-over** = A leaves (prodline: the marker of its `prodline.record_deployment` local activity; "
        "baseline: its SignalExternalWorkflowExecutionInitiated) -> B's step activity started; **end to end** = A's "
        "step activity completed -> B's step activity started.",
        "",
        "| path | hand-over p50 | p90 | end to end p50 | p90 |",
        "|---|---|---|---|---|",
        f"| baseline (signal the next) | {ms(b50)} | {ms(b90)} | {ms(c50)} | {ms(c90)} |",
        f"| prodline (lane in the ledger) | {ms(p50)} | {ms(p90)} | {ms(e50)} | {ms(e90)} |",
        f"| ratio | {p50 / b50:.2f}x | {p90 / b90:.2f}x | {e50 / c50:.2f}x | {e90 / c90:.2f}x |",
        *(
            [
                f"| prodline, B's rule activities taken out | {ms(n50)} | {ms(n90)} | | |",
                f"| ratio | {n50 / b50:.2f}x | {n90 / b90:.2f}x | | |",
            ]
            if stats(prodline, "rule activities before B's step")[0]
            else []
        ),
        "",
        f"Target (issue 12: a lane's hand-over at most {TARGET}x a plain workflow signalling the next): "
        f"**{ratio:.2f}x ({verdict})**.",
        "",
        "Where the time goes (medians of each part, so they need not add up to the totals):",
        "",
        "| part | prodline | baseline |",
        "|---|---|---|",
    ]
    # (what, prodline's part, the baseline's part): the same hop on both paths shares a row.
    rows = [
        ("A: its step done -> its next workflow task starts", "A: step done -> its task starts",
         "A: step done -> its task starts"),
        ("A: task starts -> hands over (prodline: the ledger has the record, through a local activity's "
         "signal-with-start; baseline: the signal command, as the task completes)",
         "A: task starts -> ledger has the record",
         "A: task starts -> signal sent (task completes)"),
        ("ledger: record -> its workflow task starts", "ledger: record -> its task starts", None),
        ("ledger: task starts -> turn sent to B (the task completes)",
         "ledger: task -> turn sent to B (task completes)", None),
        ("sent -> B has the signal", "turn sent -> B has it", "signal sent -> B has it"),
        ("B: signal -> its workflow task starts", "B: turn -> its task starts", "B: signal -> its task starts"),
        ("B: its rules before the step (each an activity and a workflow task)", "B: task starts -> its rules done",
         None),
        ("B: -> step scheduled (the task completes)", "B: rules done -> step scheduled",
         "B: task starts -> step scheduled"),
        ("B: step scheduled -> started", "B: step scheduled -> started", "B: step scheduled -> started"),
    ]  # fmt: skip
    for label, ours, theirs in rows:
        base = ms(stats(baseline, theirs)[0]) if theirs else "-"
        lines.append(f"| {label} | {ms(stats(prodline, ours)[0])} | {base} |")
    rules = stats(prodline, "rule activities before B's step")[0]
    local_rules = stats(prodline, "rule local activities before B's step")[0]
    fan_out = stats(prodline, "turn signals sent with B's")[0]
    marker_lag = stats(prodline, "A: marker after ledger has the record")[0]
    lines += [
        "",
        "The hand-over by how many other `turn` signals the ledger sent in the task that granted B's (before the "
        "`waiting-behind` patch: one per release still waiting):",
        "",
        "| other turns sent | hand-overs | prodline p50 | B's rules p50 | baseline p50 |",
        "|---|---|---|---|---|",
    ]
    width = max(1, (result["n"] + 3) // 4)
    for low in range(0, result["n"], width):
        group = [s for s in prodline if low <= s["turn signals sent with B's"] < low + width]
        if group:
            lines.append(
                f"| {low}-{low + width - 1} | {len(group)} | {ms(stats(group, 'handover')[0])} | "
                f"{ms(stats(group, 'B: task starts -> its rules done')[0])} | {ms(b50)} |"
            )
    lines += [
        "",
        f"A's record marker is written {ms(marker_lag)} after the ledger received the record (the local activity "
        "runs inside A's workflow task, which completes after it). With the turn it grants, the ledger sent a "
        f"median of {fan_out:.0f} other `turn` signals in the same task (each a workflow task of its own on the "
        "worker; a release waiting is told again only when the release right ahead of it changes). Between its "
        f"turn and its step, B evaluated {rules:.0f} rules as activities and {local_rules:.0f} as local activities "
        "(`prodline.evaluate_rule`: the freeze precondition every environment starts with, re-checked right "
        "before the first step only if time passed since it passed).",
        "",
        f"`{command}` wrote this section.",
    ]
    return "\n".join(lines)


def scale_report(result: dict[str, Any], command: str) -> str:
    s: Scale = result["setup"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(result["states"].items()))
    if result["closed"] < result["releases"]:
        states += f", **{result['releases'] - result['closed']} never closed**"
    verified = not result["problems"] and not result["stuck"]
    checks = (
        "no log interleaved; every log in the ledger's order; "
        + (
            "deployed versions rising, every other release refused as a downgrade; "
            if s.unordered
            else "every release succeeded, in version order; "
        )
        + "the newest version live everywhere"
    )
    lines = [
        f"_Run of {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {measured()}, {machine()}, load {os.getloadavg()[0]:.1f} at the end._",
        "",
        f"{result['releases']:,} releases: {s.services} services x {s.versions} versions, one environment, at most "
        f"{s.queued} releases per service in flight (one holding the lane, the rest queued); "
        + (
            "a service's versions race to its lane (`--unordered`). "
            if s.unordered
            else "a service's next version starts once the one before it entered the lane. "
        )
        + f'Each deploy appends "start V", sleeps {s.pause:g} s, appends "end V". `prodline worker` in its own process.',
        "",
        "| releases | outcomes | verified | wall | releases/s | start -> close p50 / p95 | worker peak RSS | "
        "worker idle | worker CPU | server CPU / peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {result['releases']:,} | {states} | {'yes' if verified else '**no**'} | {result['wall']:.0f} s | "
        f"{result['releases'] / result['wall']:.1f} | {result['p50']:.1f} s / {result['p95']:.1f} s | "
        f"{result['worker_peak_mb']:.0f} MB | {result['worker_idle_mb']:.0f} MB | {result['worker_cpu_s']:.0f} s | "
        f"{result['server_cpu_s']:.0f} s / {result['server_peak_mb']:.0f} MB |",
        "",
        f"Checked: {checks}." + (" Problems: " + "; ".join(result["problems"][:5]) if result["problems"] else ""),
        "",
    ]
    if result["per_release"]:
        c = result["per_release"]
        lines += [
            f"Per release (all releases of 3 services): {c['release tasks']:.1f} workflow tasks, "
            f"{c['activities']:.1f} activities (its step, and rules evaluated as activities), "
            f"{c['turns received']:.1f} `turn` signals received; its ledger: {c['ledger tasks']:.1f} workflow tasks "
            f"and {c['ledger signals sent']:.1f} `turn` signals sent per release.",
            "",
        ]
    if result["stuck"]:
        lines += [
            f"**Stuck: {len(result['stuck'])} of {s.services} lanes** (no release closed for {s.stall:g} s; the "
            f"wall time is until then). Each: " + "; ".join(result["stuck"][:6]),
            "",
        ]
    lines += [
        f"`{command}` wrote this section.",
    ]
    return "\n".join(lines)


def contended(contention: Contention) -> str:
    """The machine while it ran: on a shared box the absolute figures move, the ratios less."""
    f = contention.figures
    return (
        f"\n\nMachine while it ran: {f['busy_cores']:.1f} cores busy, {f['own_cores']:.1f} of them this benchmark's "
        f"processes, {f['other_cores']:.1f} other processes' (load {f['load_before']:.1f} before it started)."
    )


def save(part: str, text: str) -> None:
    """This part's block in the lanes section of bench/RESULTS.md: in place, else added to the section."""
    results = Path(__file__).resolve().parent / "RESULTS.md"
    content = results.read_text()
    begin, end = f"<!-- lanes-{part}:begin: written by bench/lanes.py -->", f"<!-- lanes-{part}:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin not in content and f"\n{TITLE}\n" in content:
        head, rest = content.split(f"\n{TITLE}\n", 1)
        cut = rest.find("\n## ")
        section, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
        results.write_text(f"{head}\n{TITLE}\n{section.rstrip()}\n\n{block}\n{tail}")
        return
    save_section(results, text, begin, end, TITLE)


# --- the command ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/lanes.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", choices=PARTS, help="run one part (default: both)")
    parser.add_argument("--rounds", type=int, default=3, help="hand-over: measured rounds (default 3)")
    parser.add_argument("--handovers", type=int, default=20, help="hand-over: hand-overs per round (default 20)")
    parser.add_argument("--services", type=int, default=Scale.services, help="scale: services (default 50)")
    parser.add_argument("--versions", type=int, default=Scale.versions, help="scale: versions per service (default 20)")
    parser.add_argument("--queued", type=int, default=Scale.queued, help="scale: releases per service in flight")
    parser.add_argument("--pause", type=float, default=Scale.pause, help="scale: seconds inside each deploy")
    parser.add_argument(
        "--unordered", action="store_true", help="scale: start versions without waiting for the last to enter the lane"
    )
    parser.add_argument("--timeout", type=float, default=Scale.timeout, help="scale: seconds before giving up")
    parser.add_argument(
        "--stall", type=float, default=Scale.stall, help="scale: seconds with no release closing before giving up"
    )
    parser.add_argument("--keep", default="", metavar="DIR", help="scale: write the histories of stuck lanes here")
    parser.add_argument("--no-save", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--live", action="store_true", help="measure the working tree as is, not a copy of it")
    parser.add_argument(
        "--trial-fix",
        default="",
        metavar="NAME[,NAME]",
        help=f"measure the copy with these proposed changes ({', '.join(TRIAL_FIXES)}); saved in blocks of their own",
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "handovers", "services", "versions", "queued"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: at least 1")
    parts = [args.only] if args.only else list(PARTS)
    trial = ",".join(filter(None, args.trial_fix.split(",")))
    suffix = f" --trial-fix {trial}" if trial else ""
    label = f" (trial change {trial}: a copy of prodline with it, not the code as it is)" if trial else ""
    failed = False
    print(TITLE)
    if "handover" in parts:
        command = f".venv/bin/python bench/lanes.py --only handover --rounds {args.rounds} --handovers {args.handovers}"
        with Contention() as contention:
            result = asyncio.run(measure_handover(args.rounds, args.handovers))
        text = f"### Hand-over{label}\n\n" + handover_report(result, command + suffix) + contended(contention)
        print("\n" + text)
        if not args.no_save:
            save(f"handover{'-' + trial if trial else ''}", text)
    if "scale" in parts:
        setup = Scale(
            services=args.services,
            versions=args.versions,
            queued=args.queued,
            pause=args.pause,
            unordered=args.unordered,
            timeout=args.timeout,
            stall=args.stall,
            keep=args.keep,
        )
        command = (
            f".venv/bin/python bench/lanes.py --only scale --services {setup.services} --versions {setup.versions} "
            f"--queued {setup.queued}" + (" --unordered" if setup.unordered else "")
        )
        with Contention() as contention:
            result = asyncio.run(measure_scale(setup))
        text = f"### Scale{label}\n\n" + scale_report(result, command + suffix) + contended(contention)
        failed = bool(result["problems"] or result["stuck"])
        print("\n" + text)
        if not args.no_save:
            save(f"scale{'-' + trial if trial else ''}", text)
    return 1 if failed else 0
