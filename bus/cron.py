"""Cron expressions: parsed into the values each field allows, searched on a naive wall clock (pure).

Five fields (minute hour day-of-month month day-of-week) or six with seconds first. A field is
`*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (a to the field's end), or a
comma-separated list of those; months and weekdays also take names (JAN, MON); 0 and 7 are
Sunday. As in Vixie cron, when day-of-month and day-of-week are both restricted (neither starts
with `*`), a day matches if either matches. Time zones are not this module's business: it answers
"which wall-clock second matches next", and `bus.schedules` maps wall clock to instants.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bus.errors import ManifestError

__all__ = ["Cron", "parse"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# (name in messages, lowest, highest, names) per field, seconds first.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)
_SECOND = timedelta(seconds=1)
_HORIZON_YEARS = 9
"""A satisfiable expression matches within 8 years (29 February skips 2100); give up after that."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cron:
    """A parsed cron expression: the sorted values each field allows."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    """Days of the month, 1-31."""
    months: tuple[int, ...]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday (7 is folded into 0)."""
    either_day: bool = False
    """Both day fields are restricted, so a day matches if either does (the Vixie rule)."""

    def matches_day(self, day: date) -> bool:
        """Whether the day-of-month, month and day-of-week fields accept `day`."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        return by_date or by_weekday if self.either_day else by_date and by_weekday

    def next_after(self, wall: datetime) -> datetime | None:
        """The first matching whole second strictly after the naive wall time `wall`."""
        t = wall.replace(microsecond=0) + _SECOND
        last_year = t.year + _HORIZON_YEARS
        try:
            while t.year <= last_year:
                if t.month not in self.months:
                    later = [m for m in self.months if m > t.month]
                    t = datetime(t.year, later[0], 1) if later else datetime(t.year + 1, self.months[0], 1)
                    continue
                if not self.matches_day(t.date()):
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                    continue
                if (hour := _at_or_after(self.hours, t.hour)) is None:
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                    continue
                if hour != t.hour:
                    t = t.replace(hour=hour, minute=0, second=0)
                if (minute := _at_or_after(self.minutes, t.minute)) is None:
                    t = t.replace(minute=0, second=0) + timedelta(hours=1)
                    continue
                if minute != t.minute:
                    t = t.replace(minute=minute, second=0)
                if (second := _at_or_after(self.seconds, t.second)) is None:
                    t = t.replace(second=0) + timedelta(minutes=1)
                    continue
                return t.replace(second=second)
        except OverflowError:  # past year 9999
            return None
        return None

    def last_at_or_before(self, wall: datetime) -> datetime | None:
        """The last matching whole second at or before the naive wall time `wall`."""
        t = wall.replace(microsecond=0)
        first_year = t.year - _HORIZON_YEARS
        try:
            while t.year >= first_year:
                if t.month not in self.months:
                    earlier = [m for m in self.months if m < t.month]
                    year, month = (t.year, earlier[-1]) if earlier else (t.year - 1, self.months[-1])
                    t = datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59)
                    continue
                if not self.matches_day(t.date()):
                    t = datetime(t.year, t.month, t.day) - _SECOND
                    continue
                if (hour := _at_or_before(self.hours, t.hour)) is None:
                    t = datetime(t.year, t.month, t.day) - _SECOND
                    continue
                if hour != t.hour:
                    t = t.replace(hour=hour, minute=59, second=59)
                if (minute := _at_or_before(self.minutes, t.minute)) is None:
                    t = t.replace(minute=0, second=0) - _SECOND
                    continue
                if minute != t.minute:
                    t = t.replace(minute=minute, second=59)
                if (second := _at_or_before(self.seconds, t.second)) is None:
                    t = t.replace(second=0) - _SECOND
                    continue
                return t.replace(second=second)
        except OverflowError:  # before year 1
            return None
        return None


def parse(expression: str, path: str) -> Cron:
    """Parse a cron expression or macro; raise ManifestError at `path` naming the field and the fix."""
    text = MACROS.get(expression.strip().lower(), expression)
    if text.strip().startswith("@"):
        raise ManifestError(path, f"unknown macro {expression.strip()!r} (known: {', '.join(MACROS)})")
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ManifestError(
            path,
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, "
            f"got {len(parts)} in {expression!r}",
        )
    seconds, minutes, hours, days, months, weekdays = (
        _field(part, spec, path) for part, spec in zip(parts, _FIELDS, strict=True)
    )
    cron = Cron(
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=tuple(sorted(months)),
        weekdays=frozenset(d % 7 for d in weekdays),
        either_day=not parts[3].startswith("*") and not parts[5].startswith("*"),
    )
    if not cron.either_day and not any(d <= _longest(m) for m in cron.months for d in cron.days):
        raise ManifestError(
            path,
            f"day-of-month {parts[3]!r} never occurs in month {parts[4]!r}, so it would never fire",
        )
    return cron


def _field(text: str, spec: tuple[str, int, int, dict[str, int]], path: str) -> set[int]:
    """The values one field allows."""
    name, low, high, _ = spec
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ManifestError(path, f"{name} step {step_text!r} in {item!r} must be an integer >= 1")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, spec, path), _value(end, spec, path)
            if first > last:
                raise ManifestError(path, f"{name} range {span!r} runs backwards; write it low-high")
        else:
            first = _value(span, spec, path)
            last = high if step_text else first  # `a/n` means from a to the field's end
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, spec: tuple[str, int, int, dict[str, int]], path: str) -> int:
    name, low, high, names = spec
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        hint = f" or a name like {next(iter(names))}" if names else ""
        raise ManifestError(path, f"{name} {text!r} is not a number{hint}")
    value = int(text)
    if not low <= value <= high:
        raise ManifestError(path, f"{name} {value} is out of range {low}-{high}")
    return value


def _longest(month: int) -> int:
    """Most days `month` ever has (29 for February)."""
    return calendar.monthrange(2024, month)[1]  # 2024 is a leap year


def _at_or_after(values: tuple[int, ...], value: int) -> int | None:
    index = bisect_left(values, value)
    return values[index] if index < len(values) else None


def _at_or_before(values: tuple[int, ...], value: int) -> int | None:
    index = bisect_right(values, value)
    return values[index - 1] if index else None
