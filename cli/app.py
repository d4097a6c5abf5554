"""``prodline app apply|show|history|diff``: the platform team's applications, registered in Temporal.

The commands only read arguments and print; :mod:`prodline.client.applications`
talks to Temporal.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from prodline.client import ReleaseClient
from prodline.client.applications import ApplicationClient
from prodline.client.signatures import Signer
from prodline.contracts import Revision

from . import exit_codes
from .common import connected, emit, initiator, warn
from .keys import signer_from


def _applications(client: ReleaseClient) -> ApplicationClient:
    return ApplicationClient(client.temporal, client.task_queue)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _when(revision: Revision) -> str:
    return f"{revision.applied_at:%Y-%m-%d %H:%M:%S %Z}".strip()


def apply(args: argparse.Namespace) -> int:
    # A signed apply names its signer only when --as says so: the key's owner is who signed,
    # and a default name ($PRODLINE_USER, $USER) would refuse an admin whose login differs.
    signer = signer_from(args, by=args.as_ or "")
    return _apply(args, signer)


@connected
async def _apply(args: argparse.Namespace, client: ReleaseClient, signer: Signer | None) -> int:
    from prodline.artifacts.store import open_store

    applied = await _applications(client).apply(
        Path(args.file), initiator(args.as_), open_store(), args.comment or "", on_warning=warn, signer=signer
    )
    revision = applied.revision
    if applied.created:
        signed = f"; signed by {revision.signed_by}" if revision.signed_by else ""
        lines = [
            f"{revision.application}: revision {revision.number} registered (digest {_short(revision.digest)}{signed})"
        ]
        lines += [f"  {change}" for change in revision.changes]
    else:
        lines = [f"{revision.application}: unchanged, revision {revision.number} is current"]
    emit(args, applied.model_dump(mode="json"), "\n".join(lines))
    return exit_codes.SUCCEEDED


@connected
async def show(args: argparse.Namespace, client: ReleaseClient) -> int:
    apps = _applications(client)
    number = args.revision or 0
    revision = await apps.revision(args.name, number)
    if revision is None:
        from prodline.errors import NotFound

        raise NotFound(f"application {args.name} has no revision {number} (see `prodline app history {args.name}`)")
    if args.json:
        print(json.dumps(revision.model_dump(mode="json")))
        return exit_codes.SUCCEEDED
    lines = [
        f"{revision.application} revision {revision.number}",
        f"  digest   {revision.digest}",
        f"  applied  {_when(revision)} by {revision.applied_by}",
    ]
    if revision.comment:
        lines.append(f"  comment  {revision.comment}")
    if revision.path:
        lines.append(f"  file     {revision.path}")
    if revision.bundle is not None:
        lines.append(
            f"  bundle   {revision.bundle.digest} ({revision.bundle.files} files, {revision.bundle.size} bytes)"
        )
    if revision.signed_by:
        lines.append(f"  signed   by {revision.signed_by}")
    lines.append("  changes:")
    lines += [f"    {change}" for change in revision.changes]
    lines.append("")
    if revision.source:
        lines.append(revision.source.rstrip("\n"))
    else:
        lines.append("(its source is no longer carried by the current run; it is in the workflow's earlier history)")
    print("\n".join(lines))
    return exit_codes.SUCCEEDED


@connected
async def history(args: argparse.Namespace, client: ReleaseClient) -> int:
    revisions = await _applications(client).history(args.name)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in revisions]))
        return exit_codes.SUCCEEDED
    lines = [f"{'REV':>4}  {'APPLIED AT':<23} {'BY':<16} {'DIGEST':<12}  CHANGES"]
    for r in revisions:
        first = r.changes[0] if r.changes else ""
        more = f" (+{len(r.changes) - 1} more)" if len(r.changes) > 1 else ""
        lines.append(f"{r.number:>4}  {_when(r):<23} {r.applied_by:<16} {_short(r.digest):<12}  {first}{more}")
    print("\n".join(lines))
    return exit_codes.SUCCEEDED


@connected
async def diff(args: argparse.Namespace, client: ReleaseClient) -> int:
    path = Path(args.file)
    comparison = await _applications(client).compare(args.name, path)
    registered, local = comparison.registered, comparison.local
    if local.app.application != args.name:
        warn(f"{path} is application {local.app.application!r}, compared with {args.name!r}")
    if comparison.same:
        emit(
            args,
            {"same": True, "revision": registered.number, "digest": registered.digest},
            f"{path}: same as {args.name} revision {registered.number}",
        )
        return exit_codes.SUCCEEDED
    if args.json:
        print(
            json.dumps(
                {
                    "same": False,
                    "revision": registered.number,
                    "digest": registered.digest,
                    "local_digest": comparison.digest,
                    "config_same": comparison.config_same,
                    "bundle_same": comparison.bundle_same,
                }
            )
        )
        return exit_codes.FAILED
    theirs = registered.bundle.short if registered.bundle else "none"
    bundles = f"bundle {theirs} registered, {comparison.bundle.short} here"
    if comparison.config_same:
        print(
            f"{path}: the settings are those of {args.name} revision {registered.number}, "
            f"but the files its rules run differ ({bundles})"
        )
        return exit_codes.FAILED
    sys.stdout.writelines(
        difflib.unified_diff(
            _lines(registered.source),
            _lines(local.source),
            fromfile=f"{args.name} revision {registered.number}",
            tofile=str(path),
        )
    )
    if not comparison.bundle_same:
        warn(f"the files its rules run differ too ({bundles})")
    return exit_codes.FAILED


def _lines(text: str) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in text.splitlines(keepends=True)]
