"""``prodline approve|reject``: people's decisions, sent as Updates that answer with the verdict.

The approver first sees what is being decided (service, version, environment, what it
waits on, the pinned application revision, the bundle and the plans of its steps), read
once; at a terminal they confirm it. With ``--key`` the decision is signed here, over a
document naming exactly that status; the release verifies it, the CLI never does.
"""

from __future__ import annotations

import argparse
import json
import sys

from prodline.client import DecisionTarget, ReleaseClient
from prodline.contracts import DecisionRecord, Verdict

from . import exit_codes, render
from .common import connected, initiator
from .keys import signer_from


def approve(args: argparse.Namespace) -> int:
    return _decide(args, Verdict.approve)


def reject(args: argparse.Namespace) -> int:
    return _decide(args, Verdict.reject)


def interactive(args: argparse.Namespace) -> bool:
    """A person at a terminal, who has not said yes already: ask them. Scripts are never asked."""
    return not (args.yes or args.json) and sys.stdin.isatty() and sys.stdout.isatty()


@connected
async def _decide(args: argparse.Namespace, client: ReleaseClient, verdict: Verdict) -> int:
    signer = signer_from(args, by=args.as_ or "")  # a bad key or --valid-for: exit 2 before anything is read
    target = await client.decision_target(args.release_id, args.environment)
    if not args.json:
        print(render.decision_prompt(target.status, target.environment, verdict), flush=True)
    # Blocking on purpose (input, a passphrase): nothing else runs meanwhile, and a thread would
    # keep asyncio.run from ending on Ctrl-C until Enter is pressed.
    if interactive(args) and not _confirm(target, verdict):
        print("nothing sent", file=sys.stderr)
        return exit_codes.FAILED
    comment = args.comment or ""
    # Signed after the yes (a passphrase is asked only then), over the status just shown.
    signed = signer.sign(target.document(verdict, comment, signer)) if signer else None
    record = await client.decide(target, verdict, by=args.as_ or initiator(), comment=comment, signed=signed)
    print(json.dumps(record.model_dump(mode="json")) if args.json else verdict_line(record))
    return exit_codes.SUCCEEDED if record.accepted else exit_codes.WRONG_STATE


def _confirm(target: DecisionTarget, verdict: Verdict) -> bool:
    try:
        answer = input(f"{verdict.value} {target.release_id} in {target.environment}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def verdict_line(record: DecisionRecord) -> str:
    """``approve by alice (ssh SHA256:...) counted: production: 1/2 approvals``, or why it was refused."""
    who = record.by + (f" ({record.verified})" if record.verified else "")
    if not record.accepted:
        return f"{record.verdict.value} by {who} refused: {record.reason}"
    return f"{record.verdict.value} by {who} counted: {record.environment}" + (
        f": {record.progress}" if record.progress else ""
    )
