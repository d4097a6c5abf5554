"""``prodline env status [SERVICE]``, and ``release list --environment E``: what runs where.

Per environment of the registered application (in promotion order) and service: the
live version, since when, who approved it, its bundle and application revision, the
release holding the lane, the ones queued behind it, a hold, a failed rollback and
drift. :mod:`prodline.client.lanes` reads the ledgers; this module reads arguments and
prints. It is imported to build the parser, so Temporal and pydantic are imported only
when one of its commands runs (``prodline --help`` stays light).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import exit_codes

if TYPE_CHECKING:
    from prodline.client import ReleaseClient
    from prodline.client.lanes import EnvironmentLane, LaneRelease
    from prodline.contracts import LaneEntry


def add_parsers(sub: argparse._SubParsersAction, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``env status``; ``connection`` adds the Temporal connection options."""
    env = sub.add_parser("env", help="what runs in each environment, and what waits there").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = env.add_parser(
        "status",
        help="per environment: the live version of each service, who approved it, what runs and waits there",
        description="Per environment of the registered application, in promotion order, and per service: the "
        "live version, since when, who approved it, its bundle and application revision; the release running "
        "there and the ones queued behind it; a hold (after a rollback) and how to lift it; a rollback that "
        "failed; drift. Without SERVICE: the services the application lists, else every service released "
        "under it.",
    )
    p.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    application_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    connection(p)
    p.set_defaults(handler=status)


def application_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--application", metavar="NAME", help="default: the application of the nearest prodline.yaml here or above"
    )


# --- env status --------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    from .common import application_name, connected

    return connected(_status)(args, application_name(args.application))


async def _status(args: argparse.Namespace, client: ReleaseClient, application: str) -> int:
    from prodline.client.lanes import environment_status, freezes_now, lanes_of

    lanes = await lanes_of(client.temporal, application, args.service)
    frozen = await freezes_now(client.temporal, application, lanes, datetime.now(UTC))
    found = await environment_status(client.temporal, application, lanes.services, lanes.environments, frozen)
    if args.json:
        print(json.dumps([lane.as_json() for lane in found]))
    elif not found:
        print(f"nothing released of {application} yet (revision {lanes.revision})")
    else:
        print(render_status(found, unhold_application=application if args.application else None))
    return exit_codes.SUCCEEDED


def render_status(lanes: list[EnvironmentLane], unhold_application: str | None = None) -> str:
    """One line per environment and service, then what runs, waits, holds or drifted there.

    ``unhold_application`` goes into the `prodline unhold` hint (when it was named, not found here).
    """
    env_width = max(len(lane.environment) for lane in lanes)
    service_width = max(len(lane.service) for lane in lanes)
    version_width = max(len(lane.live.version) if lane.live else 1 for lane in lanes)
    lines: list[str] = []
    for lane in lanes:
        version = lane.live.version if lane.live else "-"
        head = f"{lane.environment:<{env_width}}  {lane.service:<{service_width}}  {version:<{version_width}}  "
        lines.append(head + _live(lane))
        lines += [f"  {line}" for line in _details(lane, unhold_application)]
    return "\n".join(lines)


def _live(lane: EnvironmentLane) -> str:
    live = lane.live
    if live is None:
        return "nothing verified here yet"
    # After a failed rollback what runs is not known: the record says only what was verified last.
    parts = [f"{'last verified' if lane.needs_attention else 'live since'} {when(live.since)}"]
    if live.kind != "release":
        parts.append(f"a {live.kind}" + (f" by {live.by}" if live.by else ""))
    if live.approved_by:
        parts.append(f"approved by {_people(live.approved_by)}")
    if live.bundle:
        parts.append(f"bundle {short(live.bundle)}")
    if live.revision:
        parts.append(f"revision {live.revision}")
    return ", ".join(parts)


def _details(lane: EnvironmentLane, unhold_application: str | None) -> list[str]:
    lines = [f"FROZEN: {lane.frozen}"] if lane.frozen else []
    if lane.holder is not None:
        lines.append(f"running: {lane.holder.release_id} ({_kind(lane.holder, always=True)})")
    if lane.queue:
        queued = [entry.release_id + (f" ({_kind(entry)})" if entry.kind != "release" else "") for entry in lane.queue]
        lines.append("queued: " + ", ".join(queued))
    hold = lane.hold
    if hold is not None:
        unhold = f"prodline unhold {lane.service} --environment {lane.environment}"
        if unhold_application:
            unhold += f" --application {unhold_application}"
        if hold.kind == "attention":
            lines.append(f"NEEDS ATTENTION since {when(hold.at)}: {_inline(hold.reason)} — once it is fixed: {unhold}")
        else:
            by = f" by {hold.by}" if hold.by else ""
            lines.append(f"HELD at {hold.version}{by} since {when(hold.at)}: {_inline(hold.reason)} — {unhold}")
    drift = lane.drift
    if drift is not None and drift.drifted:
        differs = (
            "; ".join(f"{step}: {_inline(what)}" for step, what in drift.steps.items())
            or "differs from what was applied"
        )
        healing = f" — healing with {drift.healing}" if drift.healing else ""
        lines.append(f"drift in {drift.version} (checked {when(drift.checked_at)}): {differs}{healing}")
    if drift is not None and drift.unchecked:
        why = "; ".join(f"{step}: {_inline(what)}" for step, what in drift.unchecked.items())
        where = f" in {drift.version}" if drift.version else ""
        lines.append(f"drift not checked{where} (checked {when(drift.checked_at)}): {why}")
    return lines


def _inline(text: str) -> str:
    """A reason of several lines (a --reason, a command's output) stays under its lane, indented."""
    return text.strip().replace("\n", "\n    ")


def _kind(entry: LaneEntry, always: bool = False) -> str:
    if entry.kind == "release" and not always:
        return ""
    return entry.kind + (f" by {entry.by}" if entry.by and entry.kind != "release" else "")


def _people(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def when(moment: datetime) -> str:
    """A moment in UTC to the minute: 2026-12-02 10:14Z."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}Z"


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# --- release list --environment ------------------------------------------------------------


def list_environment(args: argparse.Namespace) -> int:
    """``release list --environment E``: the releases running and queued in E (``--service``: of one service)."""
    from .common import application_name, connected

    return connected(_list_environment)(args, application_name(args.application))


async def _list_environment(args: argparse.Namespace, client: ReleaseClient, application: str) -> int:
    from prodline.client.lanes import lane_releases

    rows = await lane_releases(client.temporal, application, args.environment, args.service)
    if args.json:
        print(json.dumps([row._asdict() for row in rows]))
    else:
        print(render_lane_releases(rows, args.environment))
    return exit_codes.SUCCEEDED


def render_lane_releases(rows: list[LaneRelease], environment: str) -> str:
    if not rows:
        return f"nothing running or queued in {environment}"
    width = max(40, *(len(row.release_id) for row in rows))
    lines = [f"{'RELEASE':<{width}} {'LANE':<8} {'VERSION':<12} KIND"]
    lines += [f"{row.release_id:<{width}} {row.place:<8} {row.version:<12} {row.kind}" for row in rows]
    return "\n".join(lines)
