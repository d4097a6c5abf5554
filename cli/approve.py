"""``prodline approve|reject``: people's decisions, sent as signals and confirmed.

The approver first sees what is being approved (service, version, environment,
what it waits on, the plans of its steps); the client then sends the decision
and reads back whether it counted, and why not.
"""

from __future__ import annotations

import argparse
import json

from prodline.client import ReleaseClient
from prodline.contracts import Verdict

from . import exit_codes, render
from .common import connected, initiator


def approve(args: argparse.Namespace) -> int:
    return _decide(args, Verdict.approve)


def reject(args: argparse.Namespace) -> int:
    return _decide(args, Verdict.reject)


@connected
async def _decide(args: argparse.Namespace, client: ReleaseClient, verdict: Verdict) -> int:
    target = await client.decision_target(args.release_id, args.environment)
    if not args.json:
        print(render.decision_prompt(target.status, target.environment, verdict), flush=True)
    record = await client.decide(target, verdict, by=args.as_ or initiator(), comment=args.comment or "")
    if args.json:
        print(json.dumps(record.model_dump(mode="json")))
    elif record.accepted:
        print(f"{verdict.value} by {record.by} accepted")
    else:
        print(f"{verdict.value} by {record.by} refused: {record.reason}")
    return exit_codes.SUCCEEDED if record.accepted else exit_codes.WRONG_STATE
