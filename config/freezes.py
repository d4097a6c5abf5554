"""Freezes: times when no release may enter an environment.

* A **scheduled freeze** is written in the application file: a one-off range (``start`` to
  ``end``) or a recurring window (an RFC 5545 ``rrule`` whose occurrences each last
  ``duration``), in local time of its ``timezone``. :func:`scheduled_freeze_at` says which one
  is in force at a moment; it is pure, so the evaluator and the tests give it their own clock.
* A **manual freeze** is set with ``prodline freeze`` and lifted with ``prodline unfreeze``. It
  is kept by the application's workflow (``workflows/application.py``), which takes the
  :class:`FreezeOrder` and :class:`UnfreezeOrder` updates and answers the ``freezes`` query
  with :class:`ManualFreeze` records. Those names and payloads are here, with no Temporal
  import, so the workflow, the evaluator (an activity, which may not import workflows) and
  the client share one definition.

The ``freeze`` precondition that holds releases to both is ``FreezeRule`` in
``config/rules.py``: it is a ``RuleSpec``, and ``rules.py`` imports this module for
:class:`ScheduledFreeze`, so this module imports nothing from ``rules.py`` (no cycle).

Local times, not instants: "every Friday 15:00 for 9h" means 15:00 on the wall clock in
Berlin, in winter and in summer. Occurrences are computed on the local clock and the
duration is added on it too (Friday 15:00 + 9h ends Saturday 00:00 local, even across a DST
change), then converted to UTC for comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule as RecurrenceRule
from dateutil.rrule import rrulestr
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from prodline.identity.documents import Signed

from .base import Model, TimeZone
from .durations import PositiveDuration, format_duration


def _local(value: datetime) -> datetime:
    """Times are local to the freeze's `timezone`: an offset would say another zone, so it is refused."""
    if value.tzinfo is not None:
        raise ValueError("write a local time without an offset (like 2026-12-20T00:00); `timezone` says which zone")
    return value


# A wall-clock time in the freeze's zone: "2026-12-20T00:00", or a date for 00:00 that day.
LocalTime = Annotated[datetime, AfterValidator(_local)]


def _refuse(field: str, message: str, value: Any) -> ValidationError:
    """An error located at ``field`` of the freeze, so the loader names that key and its line."""
    error = PydanticCustomError("invalid_freeze", "{message}", {"message": message})
    return ValidationError.from_exception_data(
        "ScheduledFreeze", [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


@lru_cache(maxsize=256)
def _compiled(text: str, start: datetime) -> RecurrenceRule:
    """The rule's occurrences, as naive local times (parsed once per rule and start)."""
    rule = rrulestr(text, dtstart=start, cache=True)
    if not isinstance(rule, RecurrenceRule):  # rrulestr returns a set only for multi-line text, refused earlier
        raise ValueError("give one RRULE")
    return rule


class ScheduledFreeze(Model):
    """A freeze written in the application file: a one-off range, or a recurring window."""

    name: str = Field(min_length=1, description="Shown to people, e.g. holidays.")
    reason: str = Field(default="", description="Why releases wait, shown with the freeze.")
    timezone: TimeZone = Field(default="UTC", description="IANA zone of `start` and `end`, e.g. Europe/Berlin.")
    start: LocalTime = Field(
        description="Local time the freeze starts (2026-12-20T00:00, or a date for 00:00); with `rrule`, "
        "its first occurrence (DTSTART)."
    )
    end: LocalTime | None = Field(default=None, description="One-off freezes: local time it ends (exclusive).")
    rrule: str | None = Field(
        default=None,
        description="Recurring freezes: an RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=FR (times from `start`).",
    )
    duration: PositiveDuration | None = Field(
        default=None, description="Recurring freezes: how long each occurrence lasts, on the local clock (9h)."
    )

    @field_validator("rrule")
    @classmethod
    def _rule_text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().removeprefix("RRULE:")
        if "\n" in text or "DTSTART" in text.upper():
            raise ValueError("give one RRULE line, like FREQ=WEEKLY;BYDAY=FR; its first occurrence is `start`")
        return text

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduledFreeze:
        if self.rrule is None:
            if self.duration is not None:
                raise _refuse("duration", "`duration` belongs to a recurring freeze: add `rrule`, or use `end`", None)
            if self.end is None:
                raise _refuse(
                    "end",
                    "a freeze needs `end` (a one-off range), or `rrule` and `duration` (a recurring window)",
                    None,
                )
            if self.end <= self.start:
                raise _refuse(
                    "end", f"end {self.end:%Y-%m-%d %H:%M} must be after start {self.start:%Y-%m-%d %H:%M}", None
                )
            return self
        if self.end is not None:
            raise _refuse(
                "end",
                "give either `end` (a one-off range) or `rrule` and `duration` (a recurring window), not both",
                None,
            )
        if self.duration is None:
            raise _refuse(
                "duration", "a recurring freeze needs `duration`: how long each occurrence lasts, e.g. 9h", None
            )
        try:
            rule = _compiled(self.rrule, self.start)
        except (ValueError, TypeError, KeyError) as exc:
            detail = str(exc)
            if "UNTIL" in detail:
                detail = "UNTIL is a local time here, like the start: write it without Z"
            elif "unpack" in detail:  # a part without `=`
                detail = "each part is NAME=VALUE, separated by ;"
            raise _refuse(
                "rrule", f"{self.rrule!r} is not an RFC 5545 rule like FREQ=WEEKLY;BYDAY=FR ({detail})", self.rrule
            ) from None
        if next(iter(rule), None) is None:
            raise _refuse("rrule", f"{self.rrule!r} never occurs from {self.start:%Y-%m-%d %H:%M} on", self.rrule)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    def in_force_until(self, now: datetime) -> datetime | None:
        """When the freeze in force at ``now`` (aware) ends, aware UTC; None when it is not in force."""
        if self.rrule is None:
            assert self.end is not None  # validated
            start, end = self._utc(self.start), self._utc(self.end)
            return end if start <= now < end else None
        assert self.duration is not None  # validated
        local_now = now.astimezone(self.zone).replace(tzinfo=None)
        # Occurrences that may cover `now`: those that began at most `duration` ago, with a day of
        # slack either side for the hours a DST change moves the local clock.
        slack = timedelta(days=1)
        ends = []
        for begins in _compiled(self.rrule, self.start).between(
            local_now - self.duration - slack, local_now + slack, inc=True
        ):
            start, end = self._utc(begins), self._utc(begins + self.duration)
            if start <= now < end:
                ends.append(end)
        return max(ends, default=None)

    def describe(self, until: datetime) -> str:
        """ "holidays: reason (scheduled, until Fri 2027-01-02 00:00 Europe/Berlin)"."""
        local = until.astimezone(self.zone)
        why = f": {self.reason}" if self.reason else ""
        return f"{self.name}{why} (scheduled, until {local:%a %Y-%m-%d %H:%M} {self.timezone})"

    def summary(self) -> str:
        """What the freeze is, as written: "every FREQ=WEEKLY;BYDAY=FR from ... for 9h"."""
        if self.rrule is None:
            assert self.end is not None
            return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} {self.timezone}"
        assert self.duration is not None
        return f"{self.rrule} from {self.start:%Y-%m-%d %H:%M} {self.timezone}, {format_duration(self.duration)} each"


def scheduled_freeze_at(freezes: Iterable[ScheduledFreeze], now: datetime) -> tuple[ScheduledFreeze, datetime] | None:
    """The scheduled freeze in force at ``now`` (aware) and when it ends (aware UTC); None when none is.

    Of several in force, the one that ends last: that is how long a release waits at least.
    """
    found: tuple[ScheduledFreeze, datetime] | None = None
    for freeze in freezes:
        ends = freeze.in_force_until(now)
        if ends is not None and (found is None or ends > found[1]):
            found = (freeze, ends)
    return found


# --- manual freezes: the application workflow's updates and query ------------------------------

FREEZE_UPDATE = "freeze"  # FreezeOrder -> ManualFreeze
UNFREEZE_UPDATE = "unfreeze"  # UnfreezeOrder -> list[ManualFreeze], those lifted
# -> list[ManualFreeze], every one kept, expired ones too: a query may not read the clock
# reliably, so the reader compares `until` with its own.
FREEZES_QUERY = "freezes"

# Error types of a refused freeze or unfreeze (the update fails; nothing is recorded).
FREEZE_REFUSED = "FreezeRefused"  # no reason, unknown environment, `until` past, not registered
NOT_FROZEN = "NotFrozen"  # an unfreeze that matched no freeze in force

ALL_ENVIRONMENTS = ""  # an order's `environment` for every environment of the application


class FreezeOrder(BaseModel):
    """``prodline freeze``: hold releases entering an environment (or all of them) until lifted."""

    environment: str = Field(default=ALL_ENVIRONMENTS, description='The environment frozen; "": every one.')
    by: str = Field(description="Who freezes.")
    reason: str = Field(description="Why releases must wait (required, shown to whoever waits).")
    until: datetime | None = Field(
        default=None, description="Lifted by itself at this time (aware); None: by unfreeze."
    )
    signed: Signed | None = Field(
        default=None, description="A FreezeDocument saying the same, signed (where `verify: ssh` requires it)."
    )


class UnfreezeOrder(BaseModel):
    """``prodline unfreeze``: lift the manual freezes of an environment ("" : every freeze)."""

    environment: str = Field(default=ALL_ENVIRONMENTS, description='Lift the freezes of this environment; "": all.')
    by: str = Field(description="Who lifts them.")
    reason: str = ""
    signed: Signed | None = Field(
        default=None, description="A FreezeDocument saying the same, signed (where `verify: ssh` requires it)."
    )


class ManualFreeze(BaseModel):
    """A freeze someone set, as the application workflow keeps it."""

    id: str
    environment: str = Field(default=ALL_ENVIRONMENTS, description='"": every environment.')
    by: str
    reason: str
    at: datetime = Field(description="When it was set (the workflow's clock).")
    until: datetime | None = None
    verified: str = Field(default="", description="'ssh SHA256:...' when the freeze was signed.")

    def in_force(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def covers(self, environment: str) -> bool:
        return self.environment in (ALL_ENVIRONMENTS, environment)

    @property
    def where(self) -> str:
        return self.environment or "every environment"

    def describe(self, now: datetime) -> str:
        """ "by alice since 10:02Z: incident 123 (until 12:00Z)" (dates shown when not today's)."""
        until = f" (until {_moment(self.until, now)})" if self.until is not None else ""
        return f"by {self.by} since {_moment(self.at, now)}: {self.reason}{until}"


def manual_freezes_at(freezes: Iterable[ManualFreeze], environment: str, now: datetime) -> list[ManualFreeze]:
    """The manual freezes in force at ``now`` that cover ``environment``, oldest first."""
    return [f for f in freezes if f.covers(environment) and f.in_force(now)]


def freeze_in_force(
    environment: str, kept: Iterable[ManualFreeze], scheduled: Iterable[ScheduledFreeze], now: datetime
) -> tuple[str, datetime | None] | None:
    """Why ``environment`` is frozen at ``now`` and until when it surely is (None: a manual freeze,
    which may be lifted any moment); None when it is not frozen. What waiting releases and
    ``prodline env status`` say."""
    manual = manual_freezes_at(kept, environment, now)
    in_force = scheduled_freeze_at(scheduled, now)
    if manual:
        reasons = [f"{environment} is frozen {f.describe(now)}" for f in manual]
        if in_force is not None:
            reasons.append(f"scheduled freeze {in_force[0].describe(in_force[1])}")
        return "; ".join(reasons), None
    if in_force is not None:
        freeze, ends = in_force
        return f"{environment} is frozen: {freeze.describe(ends)}", ends
    return None


def _moment(moment: datetime, now: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%H:%M}Z" if moment.date() == now.astimezone(UTC).date() else f"{moment:%a %Y-%m-%d %H:%M}Z"
