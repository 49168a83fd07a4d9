"""FHIR dates read in every form: the ``When`` a date becomes, and the ``Reader`` of a call.

A date reaches the rules as an aware datetime (every comparison and sum works unchanged);
one written other than as an exact instant is a ``When``, a datetime that also says how it
was written (an exact instant stays a plain datetime: most dates are, and a ``When`` costs
an object the garbage collector tracks). FHIR gives a date at year, month or day
precision, a time with or without seconds; interfaces also send a time without a zone, a
date where an ``instant`` belongs, HL7 v2's compact ``20261206``, an onset as the patient's
age or as free text. Each is read here: a time without a zone in the configured local zone
(marked), an age through the birth date and a year in a text as an approximate date, and
anything else as ``Unreadable`` (what was written, kept for the card), never as absent.

Hand-written because no maintained library reads FHIR's partial dates as intervals with the
assumptions named (``datetime.fromisoformat`` silently takes non-FHIR forms as naive times,
dateutil guesses); the patterns follow the R4 datatype regexes, loosened only where feeds
are known to deviate (shared/fhir/forms-digest.md §3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo

# How a date was read: what a card may need to say about it.
EXACT = "exact"  # as FHIR writes it, zone included
PARTIAL = "partial"  # a year, a month or a day: an interval, shown at its precision
LOCAL = "local time assumed"  # a time without a zone, read in the configured zone
APPROXIMATE = "approximate"  # from an age at onset or a year in free text
REPORTED = "date of report"  # ``issued``: when the result was reported, not collected


# YYYY[-MM[-DD[(T| )hh:mm[:ss[.f]][zone]]]], and HL7 v2's YYYYMMDD[hhmm[ss]][+-zzzz].
_ISO = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?)?)?)?"
)
_V2 = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?(?:\.(\d+))?)?([+-]\d{4})?")
# The usual form, an instant with seconds and a zone, in ASCII digits as FHIR's own regex
# writes them (``fromisoformat`` takes no other digits; ``\d`` would also match other
# scripts' digits, and costs twice as much to check).
_FULL = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_YEAR_IN_TEXT = re.compile(r"\b(1[89]\d{2}|20\d{2})\b")
# UCUM age units (FHIR's age-units value set) in years.
_AGE_UNITS = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25, "h": 1 / 8766}
_AGE_WORDS = {"year": "a", "years": "a", "yr": "a", "month": "mo", "months": "mo"}


class When(datetime):
    """An aware datetime that remembers how it was written: ``precision`` (year, month,
    day, time), ``how`` (``EXACT``, ``PARTIAL``, ``LOCAL``, ``APPROXIMATE``) and ``said``
    (the age or text it was read from). It is the start of what was written: ``until`` is
    the end (2026-12 runs to 2027-01-01)."""

    precision = "time"
    how = EXACT
    said = ""
    end: datetime | None = None  # a period's end (or an age range's): the interval's last

    @property
    def until(self) -> datetime:
        """The end of the interval written (exclusive): a month ends at the next month."""
        if self.precision == "year":  # 29 February + 1 year is 1 March
            return self + (datetime(self.year + 1, 1, 1) - datetime(self.year, 1, 1))
        if self.precision == "month":
            return (self.replace(day=28) + timedelta(days=4)).replace(day=1)
        if self.precision == "day":
            return self + timedelta(days=1)
        return self

    @property
    def last(self) -> datetime:
        """The last moment the written date may mean (the end of its day, month or year, or
        of the period it starts)."""
        if self.end is not None:
            return self.end
        return self if self.precision == "time" else self.until - timedelta(microseconds=1)


def spanning(start: datetime, end: datetime) -> When:
    """``start``, read as it was, whose interval runs to the end of ``end`` (a period)."""
    when = _when(start, precision_of(start), how_of(start), said_of(start))
    when.end = last_of(end)
    return when


def reported(when: datetime) -> When:
    """A result's date of report standing for its collection date (no effective[x])."""
    return _when(when, precision_of(when), REPORTED)


def said_of(when: datetime) -> str:
    return when.said if type(when) is When else ""


def _when(at: datetime, precision: str, how: str, said: str = "") -> When:
    when = When(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, at.tzinfo)
    when.precision, when.how, when.said = precision, how, said
    return when


def how_of(when: datetime) -> str:
    """How a date was read (``EXACT`` for a plain datetime)."""
    return when.how if type(when) is When else EXACT


def precision_of(when: datetime) -> str:
    return when.precision if type(when) is When else "time"


def last_of(when: datetime) -> datetime:
    """The last moment a date may mean: itself, or the end of the day, month or year."""
    return when.last if type(when) is When else when


@dataclass(frozen=True)
class Unreadable:
    """A date that is there but cannot be read: what was written, for the card."""

    said: str


Read = datetime | Unreadable | None  # None: nothing written (a When is a datetime)


def _zone(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return _fixed(sign * (int(digits[:2]) * 60 + int(digits[2:])))


def _fixed(minutes: int) -> tzinfo:
    return timezone(timedelta(minutes=minutes)) if minutes else UTC


def _parse(text: str, local: tzinfo) -> datetime | None:
    """A FHIR date, dateTime or instant (or a known deviation); None if not."""
    if _FULL.fullmatch(text):  # the usual form, exactly as FHIR writes it: parsed in C
        try:  # shown as a day in the local zone (render.dates), compared as an instant
            return datetime.fromisoformat(text).astimezone(local)
        except ValueError:  # a leap second, a 31st of a short month: the long way
            pass
    text = text.strip()
    match = _ISO.fullmatch(text)
    how = EXACT
    if match is None:
        match = _V2.fullmatch(text)
        if match is None:
            return None
        how = LOCAL  # HL7 v2 form: never FHIR, read as written
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if hour is None:
            precision = "day" if day else "month" if month else "year"
            start = datetime(int(year), int(month or 1), int(day or 1), tzinfo=local)
            return _when(start, precision, PARTIAL)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        leap = second == "60"
        at = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else int(second or 0),
            micro,
            tzinfo=_zone(zone) if zone else local,
        )
    except (ValueError, OverflowError):
        return None
    at = at.astimezone(local)
    return at if zone and how == EXACT else _when(at, "time", how if zone else LOCAL)


_NEVER = datetime.max.replace(tzinfo=UTC)


def next_midnight(now: datetime, local: tzinfo) -> datetime:
    """The start of the day after ``now``'s, in the local zone."""
    today = now.astimezone(local).date()
    return datetime.combine(today + timedelta(days=1), time(), tzinfo=local)


class Reader:
    """Reads the dates of one call's resources, in the configured local zone.

    One memo per call (the same timestamps recur across a lab panel); nothing outlives the
    call, so no answer depends on another patient's data.
    """

    def __init__(self, local: tzinfo = UTC, now: datetime | None = None) -> None:
        self.local = local
        self.now = now  # an age that puts a date after it cannot be read
        # Where "after today" begins: the next local midnight, whatever the time of day now
        # is (the clock) and whatever time of day a date is written with (or none).
        # Without a today, nothing is after it.
        self.tomorrow = next_midnight(now, local) if now is not None else _NEVER
        self.memo: dict[str, datetime | Unreadable] = {}  # by the text as written
        self.instants: dict[str, tuple[float, datetime]] = {}  # results' (timestamp, date)

    def date(self, value: object) -> Read:
        """A date, dateTime or instant element: a datetime (a ``When`` when not an exact
        instant), ``Unreadable``, or None."""
        if type(value) is str:
            found = self.memo.get(value)
            if found is None:
                read = _parse(value, self.local) if len(value) <= 64 else None
                found = self.memo[value] = read or Unreadable(value[:40])
            return found
        return None if value is None else Unreadable(str(value)[:40])

    def period(self, value: object) -> Read:
        """A Period: its start (or, with none, its end); ``Unreadable`` when neither reads."""
        if value is None:
            return None
        if not isinstance(value, dict):
            return Unreadable("a period that is not one")
        start, end = self.date(value.get("start")), self.date(value.get("end"))
        if isinstance(start, datetime):
            return spanning(start, end) if isinstance(end, datetime) else start
        if isinstance(end, datetime):
            return end
        return start or end or Unreadable("an empty period")

    def timing(self, value: object) -> Read:
        """A Timing: its first event, or the start of its bounds."""
        if value is None:
            return None
        if isinstance(value, dict):
            events = value.get("event")
            if isinstance(events, list) and events:
                return self.date(events[0])
            repeat = value.get("repeat")
            if isinstance(repeat, dict) and repeat.get("boundsPeriod") is not None:
                return self.period(repeat.get("boundsPeriod"))
        return Unreadable("a timing with no date")

    def age_at(self, value: object, birth: Read) -> Read:
        """An Age (onset at 31 years) as an approximate date through the birth date."""
        if not isinstance(value, dict):
            return Unreadable("an age that is not one")
        number, unit = value.get("value"), value.get("code") or value.get("unit")
        unit = _AGE_WORDS.get(str(unit).lower(), unit)
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            return Unreadable("an age with no number")
        if unit not in _AGE_UNITS:
            return Unreadable(f"an age in {str(unit)[:10]}")
        said = f"age {_number(number)}" + ("" if unit == "a" else f" {unit}")
        if not isinstance(birth, datetime):
            return Unreadable(f"at {said}, no birth date on record")
        try:
            at = birth + timedelta(days=number * _AGE_UNITS[unit] * 365.25)
        except OverflowError:
            return Unreadable(f"at {said}")
        if self.now is not None and at > self.now:  # older than the patient is
            return Unreadable(f"at {said}, after today")
        return _when(at, "year" if unit == "a" else "day", APPROXIMATE, said)

    def age_range(self, value: object, birth: Read) -> Read:
        """A Range of ages: from its low bound to the end of its high one."""
        if not isinstance(value, dict):
            return Unreadable("a range that is not one")
        low = self.age_at(value["low"], birth) if value.get("low") is not None else None
        high = self.age_at(value["high"], birth) if value.get("high") is not None else None
        if isinstance(low, datetime):
            return spanning(low, high) if isinstance(high, datetime) else low
        return high or low or Unreadable("an empty range")

    def text(self, value: object) -> Read:
        """A free-text date ("2009, after knee surgery"): a date it holds, or a year in it
        as an approximate date; ``Unreadable`` without one ("yesterday")."""
        if not isinstance(value, str):
            return Unreadable("a text that is not one")
        exact = self.date(value)
        if isinstance(exact, datetime):
            return exact
        years = _YEAR_IN_TEXT.findall(value)
        if len(set(years)) == 1:
            start = datetime(int(years[0]), 1, 1, tzinfo=self.local)
            return _when(start, "year", APPROXIMATE, value[:60])
        return Unreadable(value[:40])


def _number(value: float) -> str:
    return f"{value:g}"


def first_readable(*reads: Read) -> Read:
    """The first date read; else the first ``Unreadable`` (there was a date); else None."""
    unreadable = None
    for read in reads:
        if isinstance(read, datetime):
            return read
        if read is not None and unreadable is None:
            unreadable = read
    return unreadable


def when_of(read: Read) -> datetime | None:
    """The date read, None when absent or unreadable."""
    return read if isinstance(read, datetime) else None
