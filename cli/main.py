"""``prodline``: the command line CI and people use.

This module only parses arguments; each command lives in its own module and
is imported when it runs, so ``prodline --help`` never pays for Temporal or
pydantic imports.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import typing

from . import exit_codes


class CliError(Exception):
    """A failure to report as one line and an exit code."""

    def __init__(self, message: str, code: int = exit_codes.FAILED):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported like every other error: one line, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise CliError(f"{self.prog}: {message} (see `{self.prog} --help`)", exit_codes.INVALID)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Temporal connection (default: TEMPORAL_* variables, temporal.toml, localhost:7233)"
    )
    group.add_argument("--address", help="host:port of the Temporal frontend")
    group.add_argument("--namespace", help="Temporal namespace")
    group.add_argument(
        "--task-queue", help="task queue of the prodline workers (default: $PRODLINE_TASK_QUEUE or prodline)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prodline",
        description="Production orchestration on Temporal: every release is a durable workflow.",
        epilog="Exit codes: 0 succeeded, 1 failed, 2 invalid input, 3 rejected, 4 cancelled, 5 timed out, "
        "6 Temporal unreachable, 7 not found, 8 wrong state or refused.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check application and service files")
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="files, or folders searched for prodline.yaml and prodline.*.yaml"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="validate:run")

    p = sub.add_parser("schema", help="print the JSON Schema of the config files")
    p.add_argument("--kind", choices=["application", "service"], help="only this file's schema")
    p.set_defaults(handler="validate:schema")

    p = sub.add_parser("dev", help="run the embedded Temporal server and a worker")
    p.add_argument(
        "--state-dir",
        default=None,
        help="where the server keeps its SQLite file (default: $PRODLINE_STATE_DIR or .prodline)",
    )
    p.add_argument("--port", type=_port, default=7233, help="Temporal gRPC port (default 7233)")
    p.add_argument("--ui-port", type=_port, default=None, help="Web UI port (default: port + 1000)")
    p.add_argument("--headless", action="store_true", help="no Web UI")
    p.add_argument("--task-queue", help="task queue for the worker")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run in the background and return once ready")
    mode.add_argument("--stop", action="store_true", help="stop a server started with --detach")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="dev:run")

    p = sub.add_parser("worker", help="run a worker against an existing Temporal cluster")
    _connection(p)
    p.set_defaults(handler="dev:worker")

    for verdict, text in (
        ("approve", "approve a release waiting in an environment (or resume a paused one)"),
        ("reject", "reject a release waiting in an environment: it ends as rejected"),
    ):
        p = sub.add_parser(verdict, help=text)
        p.add_argument("release_id", metavar="ID")
        p.add_argument("--environment", help="the environment decided on (default: the one the release waits in)")
        p.add_argument("--as", dest="as_", metavar="NAME", help="who decides (default: $PRODLINE_USER or $USER)")
        p.add_argument("--comment", help="recorded with the decision")
        p.add_argument("--json", action="store_true")
        _connection(p)
        p.set_defaults(handler=f"approve:{verdict}")

    release = sub.add_parser("release", help="start and follow releases").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = release.add_parser("start", help="release a service version through its environments")
    p.add_argument("service_file", metavar="SERVICE_FILE")
    p.add_argument("--version", required=True, help="the version to release, e.g. 1.4.2")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter value (repeatable)")
    p.add_argument("--app", metavar="FILE", help="application file (default: nearest prodline.yaml)")
    p.add_argument("--initiator", help="who starts it (default: $PRODLINE_USER, $GITHUB_ACTOR or $USER)")
    p.add_argument("--wait", action="store_true", help="follow progress and exit with the release's outcome")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler="release:start")

    p = release.add_parser("status", help="show a release")
    p.add_argument("release_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler="release:status")

    p = release.add_parser("list", help="list releases, newest first")
    p.add_argument("--application")
    p.add_argument("--service")
    p.add_argument("--environment")
    p.add_argument(
        "--state", choices=["running", "waiting", "succeeded", "failed", "rejected", "cancelled", "timed_out"]
    )
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler="release:list_")

    p = release.add_parser("cancel", help="cancel a running release (stops its running step)")
    p.add_argument("release_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="return once the release has stopped")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler="release:cancel")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        module_name, func_name = args.handler.split(":")
        module = importlib.import_module(f"prodline.cli.{module_name}")
        return getattr(module, func_name)(args)
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    except Exception as exc:  # one line, never a traceback
        code, message = _classify(exc)
        if want_json:
            print(json.dumps({"error": message, "exit_code": code}))
        print(f"prodline: error: {message}", file=sys.stderr)
        return code


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    name = type(exc).__name__
    if name == "ConfigError":
        return exit_codes.INVALID, str(exc)
    if name == "TemporalUnavailable":
        return exit_codes.UNAVAILABLE, str(exc)
    if name == "RPCError":
        status = getattr(getattr(exc, "status", None), "name", "")
        if status == "NOT_FOUND":
            return exit_codes.NOT_FOUND, f"not found in Temporal: {exc}"
        if status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
            return exit_codes.INVALID, f"Temporal rejected the request: {exc}"
        return exit_codes.UNAVAILABLE, f"Temporal refused the request ({status or 'error'}): {exc}"
    return exit_codes.FAILED, f"{name}: {exc}"


def entrypoint() -> None:
    """Console-script entry: run, flush, and leave without interpreter teardown.

    Temporal's client runs a Rust runtime on its own threads; tearing the
    interpreter down under them can abort the process (SIGABRT) after the
    command has already succeeded, which would turn a good exit code bad.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
