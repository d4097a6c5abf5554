"""``prodline rollback`` and ``prodline unhold``: going back to a verified version, and moving on again.

A rollback is a release of its own (kind ``rollback``), built by the worker from
what the ledger recorded when that version was verified in the environment:
the same bundle, parameters and steps, never today's checkout. It goes first in
the environment's lane, cancelling a release in flight there, and leaves the
environment *held* at the version it restored until someone runs ``unhold``.
"""

from __future__ import annotations

import argparse

from prodline.client import ReleaseClient
from prodline.client.signatures import Signer
from prodline.errors import InvalidInput

from . import exit_codes
from .common import application_name, connected, emit, initiator
from .keys import signer_from
from .release import follow_to_end


def rollback(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise InvalidInput("--reason: say why you roll back; it is recorded with the rollback")
    signer = signer_from(args, by=args.as_ or "")  # a bad key or --valid-for: exit 2 before anything is read
    return _rollback(args, application_name(args.application), signer)


@connected
async def _rollback(args: argparse.Namespace, client: ReleaseClient, application: str, signer: Signer | None) -> int:
    started = await client.rollback(
        application, args.service, args.environment, args.to, args.reason.strip(), initiator(args.as_), signer
    )
    link = client.ui_url(started.release_id)
    shown = {"release_id": started.release_id, "run_id": started.run_id, "start": started.how, "ui_url": link}
    if not (args.wait and args.json):
        emit(
            args,
            shown,
            f"rollback {started.release_id} started: it goes first in {args.environment}'s lane and cancels any "
            f"release in flight there{'; following it' if args.wait else ''}\n  {link or ''}".rstrip(),
        )
    if not args.wait:
        return exit_codes.SUCCEEDED
    return await follow_to_end(args, client, started.release_id, shown)


def unhold(args: argparse.Namespace) -> int:
    return _unhold(args, application_name(args.application))


@connected
async def _unhold(args: argparse.Namespace, client: ReleaseClient, application: str) -> int:
    done = await client.unhold(application, args.service, args.environment, initiator(args.as_), args.reason or "")
    emit(args, {"service": args.service, "environment": args.environment, "unheld": done}, done)
    return exit_codes.SUCCEEDED
