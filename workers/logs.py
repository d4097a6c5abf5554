"""Structured logs for workers: JSON lines for machines, key=value for people."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(json: bool | None = None, level: str | None = None) -> None:
    if json is None:
        json = os.environ.get("PRODLINE_LOG_FORMAT", "").lower() == "json" or not sys.stderr.isatty()
    level_name = (level or os.environ.get("PRODLINE_LOG_LEVEL") or "INFO").upper()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Temporal's own (stdlib) logs go to the same stream at WARNING and above.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
