"""Human durations in config files: ``30s``, ``10m``, ``1h30m``, ``1h 30m``, ``2d``.

The grammar: one or more parts, each a number (``30``, ``1.5``) and a unit
(``ms``, ``s``, ``m``, ``h``, ``d``); spaces may stand between parts and
between a number and its unit, never inside a number. The parts add up. One
regular expression, :data:`PATTERN`, is both what the parser accepts and the
``pattern`` in the exported JSON Schema, so an editor and ``prodline validate``
always agree.

Durations are stored as :class:`datetime.timedelta` so the workflow can hand
them straight to Temporal timers and activity timeouts. A bare number is
refused: ``soak: 30`` could mean seconds or minutes, and guessing wrong turns a
30-minute soak into a 30-second one.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# ASCII digits and plain spaces only, written so that Python's `re` and the ECMA-262
# regexes of JSON Schema validators read it alike. A part ends before the next digit,
# so the repetition cannot backtrack.
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PART = re.compile(rf"({_NUMBER}) *(ms|s|m|h|d)")
PATTERN = rf"^ *(?:{_NUMBER} *(?:ms|s|m|h|d) *)+$"
_GRAMMAR = re.compile(PATTERN)
_BARE_NUMBER = re.compile(rf"^ *{_NUMBER} *$")
_MAX = timedelta(days=3650)


def _no_unit(value: object) -> ValueError:
    return ValueError(f"{value} has no unit; write {value}s for seconds or {value}m for minutes")


def parse_duration(value: Any) -> timedelta:
    """Parse ``1h30m``-style text into a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        raise _no_unit(value)
    elif isinstance(value, str):
        if _BARE_NUMBER.fullmatch(value):
            raise _no_unit(value.strip())
        if not _GRAMMAR.fullmatch(value):  # fullmatch: $ alone would let a trailing newline in
            raise ValueError(f"{value!r} is not a duration; write it like 30s, 10m, 1h30m or 2d")
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    else:
        raise ValueError("expected a duration such as 30s, 10m or 1h30m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > _MAX.total_seconds():
        raise ValueError("a duration cannot exceed 3650d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way it would be written in a config file."""
    total = value.total_seconds()
    if total != int(total):
        return f"{round(total * 1000)}ms"
    seconds = round(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": PATTERN, "examples": ["30s", "10m", "1h30m", "1h 30m"]}),
]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


# Timeouts and intervals: zero would mean "never runs" or a busy loop.
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
