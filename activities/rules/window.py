"""The ``window`` rule: deploy only inside allowed days and hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from prodline.config.rules import DAYS, WindowRule
from prodline.contracts import Outcome, RuleResult, RuleRun

from .base import Clock, RuleEvaluator, utc_now


def _bounds(spec: WindowRule) -> tuple[time, time | None]:
    start, end = spec.hours.split("-")
    parse = lambda text: time(int(text[:2]), int(text[3:]))  # noqa: E731
    return parse(start), (None if end == "24:00" else parse(end))


def next_opening(spec: WindowRule, now: datetime) -> datetime | None:
    """None when ``now`` is inside the window, else when it next opens (aware UTC)."""
    zone = ZoneInfo(spec.timezone)
    local = now.astimezone(zone)
    start, end = _bounds(spec)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if DAYS[day.weekday()] not in spec.days:
            continue
        opens = datetime.combine(day, start, zone)
        closes = datetime.combine(day, end, zone) if end else datetime.combine(day + timedelta(days=1), time(0), zone)
        if offset == 0 and opens <= local < closes:
            return None
        if opens > local:
            return opens.astimezone(UTC)
    raise AssertionError("a window with at least one day opens within a week")


class WindowEvaluator(RuleEvaluator[WindowRule]):
    spec_type = WindowRule

    def __init__(self, clock: Clock = utc_now):
        self._clock = clock

    async def evaluate(self, run: RuleRun, spec: WindowRule) -> RuleResult:
        described = f"{','.join(spec.days)} {spec.hours} {spec.timezone}"
        opening = next_opening(spec, self._clock())
        if opening is None:
            return RuleResult(outcome=Outcome.passed, reason=f"inside the deploy window ({described})")
        local = opening.astimezone(ZoneInfo(spec.timezone))
        return RuleResult(
            outcome=Outcome.pending,
            reason=f"outside the deploy window ({described}); opens {local:%a %Y-%m-%d %H:%M} {spec.timezone}",
            wait_until=opening,
        )
