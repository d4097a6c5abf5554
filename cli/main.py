"""``prodline``: the command line CI and people use.

This module parses arguments and turns errors into one line and an exit code.
Each command lives in its own module, imported only when one of its commands
runs (the loaders below), so ``prodline --help`` never pays for Temporal or
pydantic imports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing

from prodline.errors import ProdlineError

from . import exit_codes

if typing.TYPE_CHECKING:
    from datetime import timedelta


class Interrupted(ProdlineError):
    """Ctrl-C while following a release: the CLI stops following, the release goes on."""

    exit_code = exit_codes.INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported like every other error: one line, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise ProdlineError(f"{self.prog}: {message} (see `{self.prog} --help`)", exit_codes.INVALID)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _duration(text: str) -> timedelta:
    from prodline.config.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _signing(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--key",
        metavar="PATH",
        help=f"sign {what} with this SSH key: a private key file (e.g. ~/.ssh/id_ed25519), or the .pub of a "
        "key in ssh-agent. The signature is made here and verified by the workers; the key never leaves",
    )
    parser.add_argument(
        "--valid-for",
        type=_duration,
        metavar="DURATION",
        help="with --key: how long the signature may be used (default 15m, at most 24h)",
    )


def _connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Temporal connection (default: TEMPORAL_* variables, temporal.toml, localhost:7233)"
    )
    group.add_argument("--address", help="host:port of the Temporal frontend")
    group.add_argument("--namespace", help="Temporal namespace")
    group.add_argument(
        "--task-queue", help="task queue of the prodline workers (default: $PRODLINE_TASK_QUEUE or prodline)"
    )


def _timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help=f"with --wait: stop waiting after this long (e.g. 30m) and exit 5; {what} goes on",
    )


# --- the command modules, imported when a command runs ----------------------------------------


def _validate():
    from . import validate

    return validate


def _dev():
    from . import dev

    return dev


def _setup():
    from . import setup

    return setup


def _approve():
    from . import approve

    return approve


def _release():
    from . import release

    return release


def _app():
    from . import app

    return app


def _rollback():
    from . import rollback

    return rollback


def _safety(sub) -> None:
    """`prodline rollback|unhold`: going back to a verified version, and moving on again."""
    p = sub.add_parser(
        "rollback",
        help="roll a service back in one environment to a version verified there",
        description="Re-deploy the version verified in ENVIRONMENT before the live one (or --to VERSION), exactly "
        "as the ledger recorded it (bundle, parameters, steps). It goes first in the environment's lane, cancels a "
        "release in flight there, skips only the rules the application lets rollbacks skip (recorded), and leaves "
        "the environment held at that version until `prodline unhold`.",
    )
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--environment", required=True)
    p.add_argument("--to", metavar="VERSION", help="a version verified there (default: the one before the live one)")
    p.add_argument("--reason", required=True, help="why: recorded with the rollback and the hold")
    p.add_argument("--application", help="default: the application of the nearest prodline.yaml here or above")
    p.add_argument("--as", dest="as_", metavar="NAME", help="who rolls back (default: $PRODLINE_USER or $USER)")
    p.add_argument("--wait", action="store_true", help="follow the rollback and exit with its outcome")
    _timeout(p, "the rollback")
    p.add_argument("--json", action="store_true")
    _signing(p, "the rollback's start (required where the application says `signed_starts: true`)")
    _connection(p)
    p.set_defaults(handler=lambda args: _rollback().rollback(args))

    p = sub.add_parser("unhold", help="lift the hold a rollback left on an environment: releases may deploy again")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--environment", required=True)
    p.add_argument("--reason", help="recorded with it")
    p.add_argument("--application", help="default: the application of the nearest prodline.yaml here or above")
    p.add_argument("--as", dest="as_", metavar="NAME", help="who lifts it (default: $PRODLINE_USER or $USER)")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler=lambda args: _rollback().unhold(args))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prodline",
        description="Production orchestration on Temporal: every release is a durable workflow.",
        epilog="Exit codes: 0 succeeded, 1 failed, 2 invalid input, 3 rejected, 4 cancelled, 5 timed out, "
        "6 Temporal unreachable or not set up, 7 not found, 8 wrong state or refused, 9 rolled back, 10 superseded, "
        "130 interrupted (the release goes on), 141 output reader gone (a closed pipe).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check application and service files")
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="files, or folders searched for prodline.yaml and prodline.*.yaml"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=lambda args: _validate().run(args))

    p = sub.add_parser("schema", help="print the JSON Schema of the config files")
    p.add_argument("--kind", choices=["application", "service"], help="only this file's schema")
    p.set_defaults(handler=lambda args: _validate().schema(args))

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
    p.add_argument(
        "--apply",
        action="append",
        default=[],
        metavar="APP_FILE",
        help="register this application file once the worker runs (repeatable)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run in the background and return once ready")
    mode.add_argument("--stop", action="store_true", help="stop a server started with --detach")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=lambda args: _dev().run(args))

    p = sub.add_parser("worker", help="run a worker against an existing Temporal cluster")
    _connection(p)
    p.add_argument(
        "--runtime",
        action="store_true",
        help="serve an environment's own task queue (its `task_queue:`, given with --task-queue): its "
        "steps and rules only, never release workflows. Every worker needs the Temporal connection and "
        "PRODLINE_ARTIFACTS (the store the CLI uploads bundles to)",
    )
    p.set_defaults(handler=lambda args: _dev().worker(args))

    p = sub.add_parser(
        "setup",
        help="register prodline's search attributes on an existing namespace (once; safe to repeat)",
        description="Register the search attributes releases are started and listed with "
        "(ProdlineApplication, ProdlineService, ProdlineVersion, ProdlineEnvironment, ProdlineState; Keyword) "
        "on the namespace, through Temporal's operator service. `prodline dev` needs no setup.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _setup().run(args))

    for verdict, text, handler in (
        (
            "approve",
            "approve a release waiting in an environment (or resume a paused one)",
            lambda a: _approve().approve(a),
        ),
        ("reject", "reject a release waiting in an environment: it ends as rejected", lambda a: _approve().reject(a)),
    ):
        p = sub.add_parser(verdict, help=text)
        p.add_argument("release_id", metavar="ID")
        p.add_argument("--environment", help="the environment decided on (default: the one the release waits in)")
        p.add_argument("--as", dest="as_", metavar="NAME", help="who decides (default: $PRODLINE_USER or $USER)")
        p.add_argument("--comment", help="recorded with the decision")
        _signing(p, "the decision (required where the environment says `verify: ssh`)")
        p.add_argument("--yes", action="store_true", help="do not ask for confirmation (only asked at a terminal)")
        p.add_argument("--json", action="store_true", help="print the verdict as JSON (never asks)")
        _connection(p)
        p.set_defaults(handler=handler)

    release = sub.add_parser("release", help="start and follow releases").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = release.add_parser("start", help="release a service version through its environments")
    p.add_argument("service_file", metavar="SERVICE_FILE")
    p.add_argument("--version", required=True, help="the version to release, e.g. 1.4.2")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter value (repeatable)")
    p.add_argument(
        "--app",
        metavar="FILE",
        help="local application file to check against first (default: nearest prodline.yaml); "
        "the release obeys the revision registered in Temporal",
    )
    p.add_argument("--initiator", help="who starts it (default: $PRODLINE_USER, $GITHUB_ACTOR or $USER)")
    _signing(p, "the start (so forbid_initiator compares verified people)")
    p.add_argument("--wait", action="store_true", help="follow progress and exit with the release's outcome")
    _timeout(p, "the release")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _release().start(args))

    p = release.add_parser("status", help="show a release")
    p.add_argument("release_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler=lambda args: _release().status(args))

    p = release.add_parser("list", help="list releases, newest start first")
    p.add_argument("--application")
    p.add_argument("--service")
    p.add_argument(
        "--environment",
        help="what runs and waits in this environment: the release holding each service's lane there, then the "
        "ones queued behind it, in turn order (--application defaults to ./prodline.yaml's). With --state: "
        "releases whose current environment is this one (where a running release is now, where an ended one "
        "stopped or finished)",
    )
    p.add_argument(
        "--state",
        choices=[
            *("running", "waiting", "succeeded", "failed", "rejected", "cancelled", "timed_out"),
            *("rolled_back", "rollback_failed", "superseded"),
        ],
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many, the newest (default 50)")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler=lambda args: _release().list_(args))

    p = release.add_parser("cancel", help="cancel a running release (stops its running step)")
    p.add_argument("release_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="return once the release has stopped")
    _timeout(p, "the cancellation")
    p.add_argument("--json", action="store_true")
    _connection(p)
    p.set_defaults(handler=lambda args: _release().cancel(args))

    for action, text in (
        (
            "promote",
            "promote a release's canary past the pause it waits at (skips that pause's remaining checks, never an approval)",
        ),
        ("abort", "abort a release's canary: traffic back to the stable version, and the release fails"),
    ):
        p = release.add_parser(action, help=text, description=text + ". Recorded in the release's history.")
        p.add_argument("release_id", metavar="ID")
        if action == "promote":
            p.add_argument("--full", action="store_true", help="skip every remaining step, as `promote --full`")
        p.add_argument("--as", dest="as_", metavar="NAME", help="who acts (default: $PRODLINE_USER or $USER)")
        p.add_argument("--reason", help="recorded with the action")
        p.add_argument("--json", action="store_true")
        _connection(p)
        p.set_defaults(handler=lambda args: _release().steer(args))

    _safety(sub)
    from . import freeze  # light: Temporal and pydantic are imported when it runs

    freeze.add_parsers(sub, _connection, _signing)
    from . import env  # light: Temporal and pydantic are imported when it runs

    env.add_parsers(sub, _connection)

    app = sub.add_parser(
        "app", help="register applications in Temporal and read them back (the platform team's policy)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = app.add_parser(
        "apply",
        help="validate an application file and register it as the application's new revision",
        description="Validate FILE, upload the files its rules run (its bundle) to the artifact store "
        "($PRODLINE_ARTIFACTS) and register it in Temporal as a new revision. Releases obey the revision "
        "current when they start. Applying the same config again registers nothing.",
    )
    p.add_argument("file", metavar="FILE", help="the application file, e.g. prodline.yaml")
    p.add_argument("--as", dest="as_", metavar="NAME", help="who applies it (default: $PRODLINE_USER or $USER)")
    p.add_argument("--comment", help="recorded with the revision")
    _signing(p, "the change as an admin (required when the workers have admin keys, PRODLINE_ADMIN_KEYS)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _app().apply(args))

    p = app.add_parser("show", help="show a registered revision: who, when, what changed, and its file")
    p.add_argument("name", metavar="NAME", help="the application")
    p.add_argument("--revision", type=int, metavar="N", help="this revision (default: the current one)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _app().show(args))

    p = app.add_parser("history", help="list an application's revisions, oldest first")
    p.add_argument("name", metavar="NAME", help="the application")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _app().history(args))

    p = app.add_parser(
        "diff",
        help="compare a local application file with the current revision (exit 0 same, 1 different)",
        description="Print a unified diff from the current registered revision of NAME to FILE. Exit 0 when "
        "applying FILE would change nothing (formatting and comments aside), 1 when it would.",
    )
    p.add_argument("name", metavar="NAME", help="the application")
    p.add_argument("file", metavar="FILE", nargs="?", default="prodline.yaml", help="default: ./prodline.yaml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _connection(p)
    p.set_defaults(handler=lambda args: _app().diff(args))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # The reader went away (`prodline schema | head`): stop quietly, as Unix tools do.
        _discard_stdout()
        return exit_codes.BROKEN_PIPE


def _dispatch(argv: list[str]) -> int:
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:  # one line, never a traceback
        code, message = _classify(exc)
        if want_json:
            print(json.dumps({"error": message, "exit_code": code}))
        label = "" if isinstance(exc, Interrupted) else "error: "
        print(f"prodline: {label}{message}", file=sys.stderr)
        return code


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ProdlineError):
        return exc.exit_code, str(exc)
    from temporalio.service import RPCError, RPCStatusCode  # only errors pay for this import

    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND and "namespace" in exc.message.lower():
            # A wrong namespace is bad input (as `release status` says it), not a missing release.
            return exit_codes.INVALID, f"Temporal: {exc.message} (check --namespace or TEMPORAL_NAMESPACE)"
        if exc.status == RPCStatusCode.NOT_FOUND:
            return exit_codes.NOT_FOUND, f"not found in Temporal: {exc}"
        if exc.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION):
            return exit_codes.INVALID, f"Temporal rejected the request: {exc}"
        return exit_codes.UNAVAILABLE, f"Temporal refused the request ({exc.status.name}): {exc}"
    return exit_codes.FAILED, f"{type(exc).__name__}: {exc}"


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left cannot fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def entrypoint() -> None:
    """Console-script entry: run, flush, and leave without interpreter teardown.

    Temporal's client runs a Rust runtime on its own threads; tearing the
    interpreter down under them can abort the process (SIGABRT) after the
    command has already succeeded, which would turn a good exit code bad.
    """
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the last of the output met a reader that had gone
        _discard_stdout()
        code = exit_codes.BROKEN_PIPE
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
