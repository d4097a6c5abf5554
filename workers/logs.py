"""Worker logs in one format: structlog renders prodline's events and every stdlib record
(the Temporal SDK's, the workflow's own ``workflow.logger`` lines) alike.

JSON lines when stderr is not a terminal (or ``PRODLINE_LOG_FORMAT=json``), key=value console
lines otherwise (``PRODLINE_LOG_FORMAT=console``), coloured only on a terminal.
``PRODLINE_LOG_LEVEL`` (default INFO) sets the level; the SDK's own internals stay at WARNING.

A step or rule that fails the ordinary way raises an ``ApplicationError``, which the SDK logs
with its traceback ("Completing activity as failed"); here that is one line with the error's
message and type. Tracebacks stay for every other exception: those are bugs. Messages are
the ones the activities already redacted for history; no argument or environment is logged.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio.exceptions import ApplicationError

from prodline.errors import InvalidInput

FORMATS = ("json", "console")
# Our handler on the root logger, replaced (not added to) when configure() runs again.
_HANDLER_NAME = "prodline"
# What the SDK attaches to its records: the running workflow's or activity's identity.
_SDK_CONTEXT = ("temporal_workflow", "temporal_activity")


def configure(json: bool | None = None, level: str | None = None, stream: TextIO | None = None) -> None:
    """Send structlog events and stdlib records through one renderer to ``stream`` (stderr)."""
    out: TextIO = stream if stream is not None else sys.stderr
    as_json = _wants_json(out) if json is None else json
    threshold = _level(level)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
    if as_json:
        render: list[Processor] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        colours = out.isatty() and "NO_COLOR" not in os.environ
        render = [structlog.dev.ConsoleRenderer(colors=colours, exception_formatter=structlog.dev.plain_traceback)]
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from the stdlib (the SDK, the workflow logger) first get their extra fields.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), _sdk_context, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _expected_failure, *render],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # The SDK's internals are noisy below WARNING; the workflow's own events (workflow.logger,
    # the "temporalio.workflow" logger) are prodline's release events and pass at our level.
    logging.getLogger("temporalio").setLevel(max(threshold, logging.WARNING))
    logging.getLogger("temporalio.workflow").setLevel(threshold)


def _wants_json(stream: TextIO) -> bool:
    chosen = os.environ.get("PRODLINE_LOG_FORMAT", "").strip().lower()
    if chosen and chosen not in FORMATS:
        raise InvalidInput(f"PRODLINE_LOG_FORMAT={chosen!r} is not a log format: use json or console")
    return chosen == "json" if chosen else not stream.isatty()


def _level(level: str | None) -> int:
    name = (level or os.environ.get("PRODLINE_LOG_LEVEL") or "INFO").strip().upper()
    number = logging.getLevelNamesMapping().get(name)
    if number is None:
        raise InvalidInput(f"PRODLINE_LOG_LEVEL={name!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    return number


def _sdk_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Flatten the SDK's workflow/activity context into fields, and drop its copy from the message.

    The SDK's logger adapters append ``" ({...the same dict...})"`` to every message.
    """
    event.pop("__temporal_error_identifier", None)  # the SDK's internal marker, not for readers
    for key in _SDK_CONTEXT:
        context = event.pop(key, None)
        if not isinstance(context, dict):
            continue
        suffix = f" ({context})"
        message = event.get("event")
        if isinstance(message, str) and message.endswith(suffix):
            event["event"] = message[: -len(suffix)]
        for name, value in context.items():
            event.setdefault(name, value)
    return event


def _expected_failure(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """An ApplicationError is a step or rule failing as designed: its message, not a traceback."""
    exc = _exception(event.get("exc_info"))
    if isinstance(exc, ApplicationError):
        del event["exc_info"]
        event.setdefault("error", exc.message)
        event.setdefault("error_type", exc.type or "ApplicationError")
    return event


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    if exc_info is True:
        return sys.exc_info()[1]
    return None
