"""``prodline approve|reject``: people's decisions, sent as signals and confirmed.

The decision is a signal (so it is in the release's history whatever
happens); the CLI then reads the release status until the verdict on that very
signal appears, and says whether it counted, and why not.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from temporalio.service import RPCError, RPCStatusCode

from prodline.contracts import DECIDE_SIGNAL, Decision, Phase, ReleaseStatus, Verdict
from prodline.workers.connect import connect

from . import exit_codes
from .main import CliError
from .release import initiator, outcome, query_status

CONFIRM_SECONDS = 15


def approve(args) -> int:
    return asyncio.run(_decide(args, Verdict.approve))


def reject(args) -> int:
    return asyncio.run(_decide(args, Verdict.reject))


def _prompt(status: ReleaseStatus, environment: str, verdict: Verdict) -> str:
    env = status.environment(environment)
    lines = [f"{verdict.value} {status.service} {status.version} into {environment} (started by {status.initiator})"]
    if env.waiting_on:
        lines.append(f"  waiting on: {env.waiting_on}")
    for step in env.steps:
        if step.plan:
            lines.append(f"  plan of {step.name}:")
            lines += [f"    {line}" for line in step.plan.splitlines()]
    return "\n".join(lines)


async def _decide(args, verdict: Verdict) -> int:
    client = await connect(args.address, args.namespace)
    state, _, handle = await outcome(client, args.release_id)
    if state.final:
        raise CliError(
            f"release {args.release_id} already {state.value}; there is nothing to decide", exit_codes.WRONG_STATE
        )
    status = await query_status(handle)
    if status is None:
        raise CliError(f"release {args.release_id} does not answer (is a worker running?)", exit_codes.UNAVAILABLE)
    environment = args.environment or next((e.name for e in status.environments if e.phase is Phase.waiting), None)
    if environment is None:
        raise CliError(
            f"release {args.release_id} is not waiting for a decision; give --environment", exit_codes.WRONG_STATE
        )
    if environment not in {e.name for e in status.environments}:
        raise CliError(f"release {args.release_id} has no environment {environment!r}", exit_codes.INVALID)
    if not args.json:
        print(_prompt(status, environment, verdict), flush=True)
    decision = Decision(
        request_id=uuid.uuid4().hex,
        environment=environment,
        by=args.as_ or initiator(),
        verdict=verdict,
        comment=args.comment or "",
    )
    try:
        await handle.signal(DECIDE_SIGNAL, decision)
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise  # Temporal unreachable or refusing: reported as such
        raise CliError(f"release {args.release_id} is no longer running: {exc}", exit_codes.WRONG_STATE) from None
    record = None
    deadline = time.monotonic() + CONFIRM_SECONDS
    while record is None and time.monotonic() < deadline:
        status = await query_status(handle)
        record = next((d for d in (status.decisions if status else []) if d.request_id == decision.request_id), None)
        if record is None:
            await asyncio.sleep(0.1)
    if record is None:
        raise CliError(
            "the decision was sent but not confirmed in time; check `prodline release status`",
            exit_codes.UNAVAILABLE,
        )
    if args.json:
        print(json.dumps(record.model_dump(mode="json")))
    elif record.accepted:
        print(f"{verdict.value} by {record.by} accepted")
    else:
        print(f"{verdict.value} by {record.by} refused: {record.reason}")
    return exit_codes.SUCCEEDED if record.accepted else exit_codes.WRONG_STATE
