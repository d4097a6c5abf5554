"""``prodline freeze|unfreeze``: stop the line for an application's environment, and start it again.

A freeze is kept by the registered application's workflow in Temporal; releases entering a
frozen environment wait there (the ``freeze`` precondition) and show who froze it and why.
This module only reads arguments and prints: :mod:`prodline.client.applications` sends the
orders. It is imported to build the parser, so Temporal and pydantic are imported only
when one of its commands runs (``prodline --help`` stays light).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import exit_codes

if TYPE_CHECKING:
    from prodline.client import ReleaseClient
    from prodline.client.applications import ApplicationClient

# A duration as config files write them, or an ISO 8601 time.
_DURATION = "a duration (2h, 30m, 1h30m)"
_ISO_TIME = "an ISO time (2026-12-24T18:00, 2026-12-24T18:00+01:00)"
_DURATION_HINT = f"{_DURATION} or {_ISO_TIME}"


def until_time(text: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime:
    """``--until``: a duration from now, or an ISO time (without an offset: this machine's local
    time), as aware UTC in the future. Bad text is an ArgumentTypeError: one line, exit 2."""
    value = text.strip()
    if re.match(r"^[0-9.]+ *(ms|s|m|h|d)\b", value):
        from prodline.config.durations import parse_duration

        try:
            moment = now() + parse_duration(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither {_DURATION} nor {_ISO_TIME}") from None
        moment = (moment if moment.tzinfo else moment.astimezone()).astimezone(UTC)
    if moment <= now():
        raise argparse.ArgumentTypeError(f"{text!r} is in the past; give a time to come, or {_DURATION_HINT}")
    return moment


def add_parsers(
    sub: argparse._SubParsersAction,
    connection: Callable[[argparse.ArgumentParser], None],
    signing: Callable[[argparse.ArgumentParser, str], None],
) -> None:
    """Register ``freeze`` and ``unfreeze``; ``connection`` adds the Temporal connection options,
    ``signing`` the ``--key`` and ``--valid-for`` ones."""
    p = sub.add_parser(
        "freeze",
        help="freeze an application's environment (or all): releases entering it wait until it is lifted",
        description="Freeze an environment of a registered application, or every environment without "
        "--environment. Releases reaching it wait before deploying and show who froze it and why; "
        "a release already deploying there is not stopped. Lift it with `prodline unfreeze`.",
    )
    _application(p)
    p.add_argument("--environment", metavar="ENV", help="the environment to freeze (default: every environment)")
    p.add_argument("--reason", required=True, help="why releases must wait (shown to whoever waits)")
    p.add_argument(
        "--until",
        type=until_time,
        metavar="TIME",
        help=f"lift it by itself then: {_DURATION_HINT}; without an offset, this machine's local time",
    )
    p.add_argument("--as", dest="as_", metavar="NAME", help="who freezes (default: $PRODLINE_USER or $USER)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    signing(p, "the freeze (required where the environment, or any for all, says `verify: ssh`)")
    connection(p)
    p.set_defaults(handler=run)

    p = sub.add_parser(
        "unfreeze",
        help="lift the freezes of an application's environment (or all of them)",
        description="Lift the manual freezes in force on an environment, or every freeze of the "
        "application without --environment. Scheduled freezes (in the application file) are not lifted.",
    )
    _application(p)
    p.add_argument("--environment", metavar="ENV", help="lift the freezes of this environment (default: every freeze)")
    p.add_argument("--reason", help="recorded with the unfreeze")
    p.add_argument("--as", dest="as_", metavar="NAME", help="who lifts it (default: $PRODLINE_USER or $USER)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    signing(p, "the unfreeze (required where the environment, or any for all, says `verify: ssh`)")
    connection(p)
    p.set_defaults(handler=run)


def _application(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--application",
        metavar="NAME",
        help="the registered application (default: the `application:` of the nearest prodline.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    """``prodline freeze`` or ``prodline unfreeze``, as ``args.command`` says."""
    from .common import connected

    return connected(_unfreeze if args.command == "unfreeze" else _freeze)(args)


async def _freeze(args: argparse.Namespace, client: ReleaseClient) -> int:
    from .common import application_name, emit, initiator
    from .keys import signer_from

    name = application_name(args.application)
    signer = signer_from(args, by=args.as_ or "")  # a bad key or --valid-for: exit 2 before anything is sent
    freeze = await _applications(client).freeze(
        name, args.environment or "", initiator(args.as_), args.reason or "", args.until, signer
    )
    until = f" until {freeze.until:%Y-%m-%d %H:%M}Z" if freeze.until else " until `prodline unfreeze`"
    signed = f" [{freeze.verified}]" if freeze.verified else ""
    emit(
        args,
        freeze.model_dump(mode="json"),
        f"{name}: {freeze.where} frozen by {freeze.by}{signed}{until}: {freeze.reason}\n"
        f"  releases entering {freeze.where} wait; one already deploying there goes on",
    )
    return exit_codes.SUCCEEDED


async def _unfreeze(args: argparse.Namespace, client: ReleaseClient) -> int:
    from .common import application_name, emit, initiator
    from .keys import signer_from

    name = application_name(args.application)
    signer = signer_from(args, by=args.as_ or "")
    lifted = await _applications(client).unfreeze(
        name, args.environment or "", initiator(args.as_), args.reason or "", signer
    )
    lines = [f"{name}: lifted {len(lifted)} freeze{'' if len(lifted) == 1 else 's'}"]
    lines += [f"  {f.where}: frozen by {f.by} at {f.at:%Y-%m-%d %H:%M}Z: {f.reason}" for f in lifted]
    emit(args, [f.model_dump(mode="json") for f in lifted], "\n".join(lines))
    return exit_codes.SUCCEEDED


def _applications(client: ReleaseClient) -> ApplicationClient:
    from prodline.client.applications import ApplicationClient

    return ApplicationClient(client.temporal, client.task_queue)
