"""``prodline release start|status|list|cancel|promote|abort``: what CI runs and waits on, and operators steer with.

The commands only read arguments and print; :mod:`prodline.client` talks to
Temporal, :mod:`.render` says how things read, :mod:`.follow` waits.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

from prodline.artifacts.store import ArtifactStore, open_store
from prodline.client import Progress, ReleaseClient
from prodline.client.prepare import check_locally, prepare
from prodline.client.signatures import Signer
from prodline.contracts import ReleaseState, RolloutCommand
from prodline.errors import InvalidInput

from . import exit_codes, render
from .common import connected, emit, initiator, warn
from .follow import WORKER_CHECK_SECONDS, follow
from .keys import signer_from

# `release status`: work scheduled this long ago and not started means no worker takes it.
STATUS_STALL = timedelta(seconds=WORKER_CHECK_SECONDS)


def _params(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--param {pair!r}: expected NAME=VALUE")
        values[name] = value
    return values


def _timeout_needs_wait(args: argparse.Namespace) -> None:
    if args.timeout is not None and not args.wait:
        raise InvalidInput("--timeout applies to --wait: give both (see `prodline release --help`)")


# --- start ---------------------------------------------------------------------------


def start(args: argparse.Namespace) -> int:
    _timeout_needs_wait(args)
    values = _params(args.param)
    app_file = Path(args.app) if args.app else None
    # A bad key or --valid-for is refused before anything is checked, packed or sent.
    signer = signer_from(args, by=args.initiator or "")
    check_locally(Path(args.service_file), args.version, values, initiator(args.initiator), app_file)
    store = open_store()
    return _start(args, values, store, signer)


@connected
async def _start(
    args: argparse.Namespace,
    client: ReleaseClient,
    values: dict[str, str],
    store: ArtifactStore,
    signer: Signer | None,
) -> int:
    prepared = await prepare(
        client.temporal,
        Path(args.service_file),
        args.version,
        values,
        initiator(args.initiator),
        store,
        Path(args.app) if args.app else None,
        signer,
    )
    for note in prepared.notes:
        warn(note)
    request = prepared.request
    started = await client.start(request)
    release_id = started.release_id
    if started.config_changed:
        warn(
            f"{release_id} was started with a different config; following the existing release "
            "(cancel it or use a new version to change it)"
        )
    link = client.ui_url(release_id)
    shown = {"release_id": release_id, "run_id": started.run_id, "start": started.how, "ui_url": link}
    where = f"\n  {link or 'set PRODLINE_UI_URL for a UI link'}"
    if started.how == "already-released":
        # Nothing runs: say so, and which release did it, rather than report a success as news.
        when = f" at {started.closed_at:%Y-%m-%d %H:%M:%S %Z}" if started.closed_at else ""
        text = f"release {release_id} already succeeded{when} (run {started.run_id}); not released again{where}"
        if args.wait and args.json:
            view = await client.view(release_id)
            shown |= render.document(view.status, view.state, view.reason, link)
        emit(args, shown, text)
        return exit_codes.SUCCEEDED
    problem = await client.worker_problem(started.task_queue)
    if problem:
        warn(problem)
    for unserved in await client.unserved(prepared.queues):
        warn(unserved)
    if not (args.wait and args.json):
        words = "started" if started.how == "started" else "is already running"
        words += "; following it" if args.wait else ""
        emit(args, shown, f"release {release_id} {words}{where}")
    if not args.wait:
        return exit_codes.SUCCEEDED
    return await follow_to_end(args, client, release_id, shown)


async def follow_to_end(args: argparse.Namespace, client: ReleaseClient, release_id: str, shown: dict) -> int:
    """`--wait`: stream the release's events, then print its end and exit with it."""
    link = shown.get("ui_url")
    printed = 0

    def show(look: Progress) -> None:
        nonlocal printed
        if look.status is not None and not args.json:
            for line in render.progress(look.status.events[printed:]):
                print(line, flush=True)
            printed = len(look.status.events)

    last = await follow(client, release_id, timeout=args.timeout, on_progress=show, checked=True)
    assert last.outcome is not None
    state, status = last.outcome.state, last.status
    reason = last.outcome.reason or (status.reason if status else "")
    emit(
        args,
        shown | render.document(status, state, reason, link),
        render.summary(release_id, state, reason, status, link),
    )
    return exit_codes.BY_STATE[state.value]


# --- status, list, cancel ------------------------------------------------------------------


@connected
async def status(args: argparse.Namespace, client: ReleaseClient) -> int:
    view = await client.view(args.release_id)
    if view.status is None:
        if view.outcome.running:
            queue = view.outcome.description.task_queue
            warn(f"no worker answers for {args.release_id} (task queue {queue!r}): showing its state only")
        else:
            warn(f"the history of {args.release_id} could not be read back: showing its state only")
    elif view.outcome.running:
        # The workflow answers, but its work may wait on an environment's queue nobody polls.
        desc = view.outcome.description
        problem = await client.worker_problem(desc.task_queue, desc, STATUS_STALL, view.status)
        if problem:
            warn(problem)
    link = client.ui_url(args.release_id)
    if args.json:
        print(
            json.dumps({"release_id": args.release_id, **render.document(view.status, view.state, view.reason, link)})
        )
    else:
        text = render.summary(args.release_id, view.state, view.reason, view.status, link)
        if view.status is not None:
            text += "\n" + render.details(view.status)
        print(text.lstrip("\n"))
    return exit_codes.SUCCEEDED


def list_(args: argparse.Namespace) -> int:
    # `--environment` alone: that environment's lanes (what runs, what is queued); with --state: visibility.
    if args.environment and args.state is None:
        from .env import list_environment

        return list_environment(args)
    return _list(args)


@connected
async def _list(args: argparse.Namespace, client: ReleaseClient) -> int:
    rows = await client.list_releases(
        application=args.application,
        service=args.service,
        environment=args.environment,
        state=args.state,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([row.as_json() for row in rows]))
    else:
        print(render.release_table(rows))
    return exit_codes.SUCCEEDED


def cancel(args: argparse.Namespace) -> int:
    _timeout_needs_wait(args)
    return _cancel(args)


@connected
async def _cancel(args: argparse.Namespace, client: ReleaseClient) -> int:
    await client.cancel(args.release_id)
    if not args.wait:
        emit(
            args, {"release_id": args.release_id, "state": "cancelling"}, f"cancellation of {args.release_id} requested"
        )
        return exit_codes.SUCCEEDED
    last = await follow(client, args.release_id, timeout=args.timeout, what="the cancellation")
    assert last.outcome is not None
    state, reason = last.outcome.state, last.outcome.reason
    emit(
        args,
        {"release_id": args.release_id, "state": state.value, "reason": reason},
        f"release {args.release_id} {state.value}" + (f": {reason}" if reason else ""),
    )
    # The cancel did what was asked only if the release ended cancelled (it may have finished first).
    return exit_codes.SUCCEEDED if state is ReleaseState.cancelled else exit_codes.WRONG_STATE


@connected
async def steer(args: argparse.Namespace, client: ReleaseClient) -> int:
    """`release promote|abort`: the release acts on its canary; refusals exit WRONG_STATE."""
    action = "promote_full" if getattr(args, "full", False) else args.action
    command = RolloutCommand(action=action, by=initiator(args.as_), reason=args.reason or "")
    done = await client.steer(args.release_id, command)
    emit(args, {"release_id": args.release_id, "action": action, "done": done}, f"{args.release_id}: {done}")
    return exit_codes.SUCCEEDED
