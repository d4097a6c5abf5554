"""What every command that talks to Temporal shares: one way to run it, who acts, how it prints."""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

from prodline.client import ReleaseClient

P = ParamSpec("P")


def connected(
    command: Callable[Concatenate[argparse.Namespace, ReleaseClient, P], Awaitable[int]],
) -> Callable[Concatenate[argparse.Namespace, P], int]:
    """Make an async ``command(args, client, ...)`` a CLI command: connect as the arguments say, run it."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, *more: P.args, **options: P.kwargs) -> int:
        async def main() -> int:
            client = await ReleaseClient.connect(args.address, args.namespace, args.task_queue)
            return await command(args, client, *more, **options)

        return asyncio.run(main())

    return run


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


def application_name(explicit: str | None, here: Path | None = None) -> str:
    """``--application``, else the ``application:`` of the nearest ``prodline.yaml`` here or above."""
    from prodline.config.loader import APPLICATION_FILE
    from prodline.errors import InvalidInput

    if explicit:
        return explicit
    start = (here or Path.cwd()).resolve()
    for folder in [start, *start.parents]:
        candidate = folder / APPLICATION_FILE
        if candidate.is_file():
            from prodline.config.yamlsource import read_yaml

            data = read_yaml(candidate).data
            name = data.get("application") if isinstance(data, dict) else None
            if isinstance(name, str) and name:
                return name
            raise InvalidInput(f"{candidate}: has no `application:` name; name the application with --application")
    raise InvalidInput(f"name the application with --application (no {APPLICATION_FILE} in {start} or above)")


def warn(message: str) -> None:
    print(f"prodline: warning: {message}", file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, default=str))
    elif text:
        print(text, flush=True)
