"""``prodline release start|status|list|cancel``: what CI runs and waits on."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from prodline.config import ReleaseRequest, load_request

# Names, not the workflow class: importing it would pull in every activity.
from prodline.contracts import FAILURE_TYPES, RELEASE_WORKFLOW, STATUS_QUERY, Phase, ReleaseState, ReleaseStatus
from prodline.workers.connect import connect, task_queue, ui_url
from prodline.workflows import search_attributes as sa

from . import exit_codes
from .main import CliError

POLL_SECONDS = float(os.environ.get("PRODLINE_POLL_SECONDS", "0.5"))
_STATE_BY_FAILURE_TYPE = {v: k for k, v in FAILURE_TYPES.items()}


def initiator(explicit: str | None = None) -> str:
    """Who is acting: explicit, else the CI or shell user."""
    if explicit:
        return explicit
    for var in ("PRODLINE_USER", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _params(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--param {pair!r}: expected NAME=VALUE", exit_codes.INVALID)
        values[name] = value
    return values


def _emit(args, data: dict, text: str) -> None:
    if args.json:
        print(json.dumps(data, default=str))
    elif text:
        print(text, flush=True)


# --- start ---------------------------------------------------------------------------


def start(args) -> int:
    request = load_request(
        Path(args.service_file),
        args.version,
        _params(args.param),
        initiator(args.initiator),
        Path(args.app) if args.app else None,
    )
    return asyncio.run(_start(args, request))


async def start_release(client: Client, request: ReleaseRequest, queue: str) -> WorkflowHandle:
    """Start the release's workflow, or attach to it if it runs already.

    One workflow per service version. A retried CI job attaches to the running
    release (USE_EXISTING); a new run is allowed only after a failed one
    (ALLOW_DUPLICATE_FAILED_ONLY), so a succeeded version is not released twice.
    """
    envs = " → ".join(e.name for e in request.environments)
    return await client.start_workflow(
        RELEASE_WORKFLOW,
        request,
        id=request.release_id,
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.APPLICATION, request.application),
                SearchAttributePair(sa.SERVICE, request.service),
                SearchAttributePair(sa.VERSION, request.version),
                SearchAttributePair(sa.STATE, ReleaseState.running.value),
            ]
        ),
        memo={"digest": request.digest, "initiator": request.initiator},
        static_summary=f"{request.service} {request.version}: {envs}"[:200],
    )


async def _start(args, request: ReleaseRequest) -> int:
    client = await connect(args.address, args.namespace)
    try:
        handle = await start_release(client, request, task_queue(args.task_queue))
        # The SDK does not expose "started or attached" publicly; its start response does.
        response = getattr(handle, "_start_workflow_response", None)
        started = getattr(response, "started", True)
        how = "started" if started else "attached"
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(request.release_id)
        how = "already-released"
    if how != "started":
        desc = await handle.describe()
        memo = await desc.memo()
        if memo.get("digest") not in (None, request.digest):
            print(
                f"prodline: warning: {request.release_id} was started with a different config; "
                "following the existing release (cancel it or use a new version to change it)",
                file=sys.stderr,
            )
    link = ui_url(client.service_client.config.target_host, client.namespace, request.release_id)
    words = {
        "started": "started",
        "attached": "is already running; following it",
        "already-released": "already succeeded",
    }
    started = {"release_id": request.release_id, "run_id": handle.result_run_id, "start": how, "ui_url": link}
    if how != "already-released":
        await _warn_without_workers(client, task_queue(args.task_queue))
    if not (args.wait and args.json):
        _emit(
            args, started, f"release {request.release_id} {words[how]}\n  {link or 'set PRODLINE_UI_URL for a UI link'}"
        )
    if not args.wait:
        return exit_codes.SUCCEEDED
    return await _follow(args, client, client.get_workflow_handle(request.release_id), link, started)


async def _warn_without_workers(client: Client, queue: str) -> None:
    """A release with no worker waits silently forever; say so once, up front."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=5),
        )
    except RPCError:
        return
    if not response.pollers:
        print(
            f"prodline: warning: no worker is polling task queue {queue!r}; the release does not move until one does "
            "(start `prodline dev` or `prodline worker`)",
            file=sys.stderr,
        )


# --- following a release --------------------------------------------------------------


async def query_status(handle: WorkflowHandle) -> ReleaseStatus | None:
    try:
        return await handle.query(STATUS_QUERY, result_type=ReleaseStatus, rpc_timeout=timedelta(seconds=2))
    except Exception:
        return None  # no worker right now: progress shows up once one is back


async def outcome(client: Client, release_id: str) -> tuple[ReleaseState, str, WorkflowHandle]:
    """The release's state and reason, from Temporal alone (no worker needed)."""
    handle = client.get_workflow_handle(release_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "namespace" in exc.message.lower():
            raise CliError(f"Temporal: {exc.message}", exit_codes.INVALID) from None
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"no release with ID {release_id!r}", exit_codes.NOT_FOUND) from None
        raise
    status = desc.status
    if status == WorkflowExecutionStatus.RUNNING:
        state = desc.typed_search_attributes.get(sa.STATE) or ReleaseState.running.value
        return ReleaseState(state), "", handle
    if status == WorkflowExecutionStatus.COMPLETED:
        return ReleaseState.succeeded, "", handle
    if status == WorkflowExecutionStatus.CANCELED:
        return ReleaseState.cancelled, "the release was cancelled", handle
    if status == WorkflowExecutionStatus.TIMED_OUT:
        return ReleaseState.timed_out, "the release exceeded its execution timeout", handle
    if status == WorkflowExecutionStatus.TERMINATED:
        return ReleaseState.failed, "the release was terminated in Temporal", handle
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            return _STATE_BY_FAILURE_TYPE.get(cause.type or "", ReleaseState.failed), cause.message, handle
        return ReleaseState.failed, str(cause or exc), handle
    return ReleaseState.failed, "", handle


async def _follow(args, client: Client, handle: WorkflowHandle, link: str | None, started: dict) -> int:
    shown = 0
    status = None
    while True:
        desc = await handle.describe()
        status = await query_status(handle) or status
        if status is not None and not args.json:
            for event in status.events[shown:]:
                where = f"{event.environment:<12}" if event.environment else " " * 12
                lines = event.message.splitlines() or [""]
                print(f"{event.at:%H:%M:%S}  {where} {lines[0]}", flush=True)
                for line in lines[1:]:
                    print(f"{'':>22}{line}", flush=True)
            shown = len(status.events)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(POLL_SECONDS)
    state, reason, _ = await outcome(client, handle.id)
    _emit(
        args,
        {**started, **_document(status, state, reason, link)},
        _render_summary(handle.id, state, reason or (status.reason if status else ""), status, link),
    )
    return exit_codes.BY_STATE[state.value]


def _document(status: ReleaseStatus | None, state: ReleaseState, reason: str, link: str | None) -> dict:
    """What `--json` prints about a release: one shape for `status` and `start --wait`."""
    data = status.model_dump(mode="json") if status else {}
    data.update(state=state.value, reason=reason or data.get("reason", ""), ui_url=link)
    return data


def _render_summary(
    release_id: str, state: ReleaseState, reason: str, status: ReleaseStatus | None, link: str | None
) -> str:
    lines = [""]
    for env in status.environments if status else []:
        steps = "  ".join(f"{s.name}:{s.phase.value}" for s in env.steps)
        waiting = f"  (waiting on {env.waiting_on})" if env.waiting_on else ""
        lines.append(f"  {env.name:<12} {env.phase.value:<10} {steps}{waiting}")
        if env.phase is Phase.waiting:  # what would be applied, for whoever is asked to approve
            for step in env.steps:
                if step.plan:
                    lines.append(f"    plan of {step.name}: {step.summary}")
                    lines += [f"      {line}" for line in step.plan.splitlines()]
    lines.append(f"release {release_id} {state.value}" + (f": {reason}" if reason else ""))
    if link:
        lines.append(f"  {link}")
    return "\n".join(lines)


# --- status, list, cancel ------------------------------------------------------------------


def status(args) -> int:
    return asyncio.run(_status(args))


async def _status(args) -> int:
    client = await connect(args.address, args.namespace)
    state, reason, handle = await outcome(client, args.release_id)
    current = await query_status(handle)
    if current is not None and not state.final:
        # The query ran after describe, so it is the fresher view of a running release
        # (it may have started waiting, or just finished, between the two calls).
        state, reason = current.state, current.reason
    link = ui_url(client.service_client.config.target_host, client.namespace, args.release_id)
    if args.json:
        print(json.dumps({"release_id": args.release_id, **_document(current, state, reason, link)}))
    else:
        text = _render_summary(args.release_id, state, reason or (current.reason if current else ""), current, link)
        if current is not None:
            text += "\nrecent events:\n" + "\n".join(
                f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.environment or '-':<12} {e.message.splitlines()[0]}"
                for e in current.events[-10:]
            )
        print(text.lstrip("\n"))
    return exit_codes.SUCCEEDED


def _quoted(value: str) -> str:
    if any(c in value for c in "'\"\\"):
        raise CliError(f"invalid filter value {value!r}", exit_codes.INVALID)
    return f"'{value}'"


def list_(args) -> int:
    return asyncio.run(_list(args))


async def _list(args) -> int:
    client = await connect(args.address, args.namespace)
    clauses = ["WorkflowType = 'Release'"]
    for key, value in (
        (sa.APPLICATION, args.application),
        (sa.SERVICE, args.service),
        (sa.ENVIRONMENT, args.environment),
        (sa.STATE, args.state),
    ):
        if value:
            clauses.append(f"{key.name} = {_quoted(value)}")
    rows = []
    async for wf in client.list_workflows(" AND ".join(clauses), limit=args.limit):
        attrs = wf.typed_search_attributes
        state = attrs.get(sa.STATE) or ""
        if wf.status == WorkflowExecutionStatus.TERMINATED:
            state = "failed"
        elif wf.status == WorkflowExecutionStatus.CANCELED:
            state = "cancelled"
        rows.append(
            {
                "release_id": wf.id,
                "run_id": wf.run_id,
                "application": attrs.get(sa.APPLICATION),
                "service": attrs.get(sa.SERVICE),
                "version": attrs.get(sa.VERSION),
                "environment": attrs.get(sa.ENVIRONMENT),
                "state": state,
                "started_at": wf.start_time.isoformat() if wf.start_time else None,
                "closed_at": wf.close_time.isoformat() if wf.close_time else None,
            }
        )
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'RELEASE':<40} {'STATE':<10} {'ENVIRONMENT':<12} STARTED")
        for r in rows:
            print(
                f"{r['release_id']:<40} {r['state']:<10} {r['environment'] or '-':<12} {(r['started_at'] or '')[:19]}"
            )
    return exit_codes.SUCCEEDED


def cancel(args) -> int:
    return asyncio.run(_cancel(args))


async def _cancel(args) -> int:
    client = await connect(args.address, args.namespace)
    state, _, handle = await outcome(client, args.release_id)
    if state.final:
        raise CliError(f"release {args.release_id} already {state.value}; nothing to cancel", exit_codes.WRONG_STATE)
    try:
        await handle.cancel()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        # It closed between the look and the cancel: say how it ended, not "no such release".
        state, _, _ = await outcome(client, args.release_id)
        raise CliError(
            f"release {args.release_id} already {state.value}; nothing to cancel", exit_codes.WRONG_STATE
        ) from None
    if args.wait:
        await _warn_without_workers(client, (await handle.describe()).task_queue)
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(POLL_SECONDS)
        state, reason, _ = await outcome(client, args.release_id)
        _emit(
            args,
            {"release_id": args.release_id, "state": state.value, "reason": reason},
            f"release {args.release_id} {state.value}" + (f": {reason}" if reason else ""),
        )
        # The cancel did what was asked only if the release ended cancelled (it may have finished first).
        return exit_codes.SUCCEEDED if state is ReleaseState.cancelled else exit_codes.WRONG_STATE
    else:
        _emit(
            args, {"release_id": args.release_id, "state": "cancelling"}, f"cancellation of {args.release_id} requested"
        )
    return exit_codes.SUCCEEDED
