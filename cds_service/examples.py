"""The example hook requests (``fhir_examples/``), with their dates moved to today.

The files were written on ``AUTHORED``: a result "eleven days ago" is dated eleven days
before it. Posted as they are on a later day they go stale (an urgent potassium of three
weeks ago is no longer urgent), so ``cds-service example NAME`` moves every FHIR date,
dateTime and instant by the time between ``AUTHORED`` and today, keeping each value's
precision, time of day and offset: the example is as recent today as it was when written.
With today = ``AUTHORED`` nothing moves and the output is the file byte for byte, so the
files and the command have one source (``tests/test_examples.py``).

The files ship in the package as ``cds_service.bundled_examples`` (see setup.py), so an
installed wheel prints them too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import cast

EXAMPLES_PACKAGE = "cds_service.bundled_examples"
# The day the examples were written for; tests replay the files with CDS_TODAY set to it.
AUTHORED = date(2026, 11, 24)

# Elements of FHIR type date, dateTime or instant, by name: every choice ending in
# Date/DateTime/Instant (birthDate, onsetDateTime, effectiveInstant, valueDate ...) and these.
# Only string values that read as a FHIR date are moved, so a same-named element of
# another type (MolecularSequence's integer start) is left alone.
DATE_SUFFIXES = ("Date", "DateTime", "Instant")
DATE_NAMES = frozenset(
    {
        "authoredOn",
        "created",
        "date",
        "dateAsserted",
        "end",
        "event",
        "issued",
        "lastOccurrence",
        "lastUpdated",
        "recorded",
        "start",
        "timestamp",
        "whenHandedOver",
        "whenPrepared",
    }
)
# YYYY, YYYY-MM, YYYY-MM-DD, then an optional time and offset, kept as written (also the
# forms feeds send that FHIR does not allow, without seconds or zone: the day still moves).
FHIR_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?)?)?"
)


class UnknownExample(LookupError):
    """No example has that name (the message lists the names there are)."""


@dataclass(frozen=True)
class Shift:
    """How far the examples move: whole days for full dates, and for a value given only to
    the month or the year, the calendar months or years between the two days."""

    days: int
    months: int
    years: int

    @classmethod
    def between(cls, authored: date, today: date) -> Shift:
        return cls(
            days=(today - authored).days,
            months=(today.year - authored.year) * 12 + today.month - authored.month,
            years=today.year - authored.year,
        )

    def value(self, text: str) -> str:
        """``text`` moved, at its own precision; anything not a FHIR date is unchanged."""
        match = FHIR_DATE.fullmatch(text)
        if match is None:
            return text
        year, month, day, time = match.groups()
        try:
            if day is not None:
                moved = date(int(year), int(month), int(day)) + timedelta(days=self.days)
                return moved.isoformat() + (time or "")
            if month is not None:
                index = int(year) * 12 + int(month) - 1 + self.months
                return f"{index // 12:04d}-{index % 12 + 1:02d}"
            return f"{int(year) + self.years:04d}"
        except (ValueError, OverflowError):  # not a real date (month 13, year 0): as written
            return text

    def resource(self, node: object, name: str = "") -> object:
        """A copy of a JSON tree with every date element moved (``name``: its element)."""
        if isinstance(node, dict):
            return {key: self.resource(value, key) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resource(item, name) for item in node]
        if isinstance(node, str) and is_date_element(name):
            return self.value(node)
        return node


def is_date_element(name: str) -> bool:
    return name in DATE_NAMES or name.endswith(DATE_SUFFIXES)


def examples_dir() -> Path:
    root = files(EXAMPLES_PACKAGE)
    if not isinstance(root, Path):  # e.g. imported from a zip: not supported
        raise UnknownExample(f"the bundled examples ({EXAMPLES_PACKAGE}) are not in a directory")
    return root


def names() -> list[str]:
    """Every example, by name (its file name without ``.json``), sorted."""
    return sorted(path.stem for path in examples_dir().glob("*.json"))


def today_utc() -> date:
    """The service's clinical today when CDS_TODAY is unset (service.py: the UTC clock)."""
    return datetime.now(UTC).date()


def request(name: str, today: date) -> dict:
    """Example ``name`` as a hook request whose dates are as recent on ``today`` as they
    were on ``AUTHORED``."""
    if name not in names():
        raise UnknownExample(f"no example {name!r}; there are: {', '.join(names())}")
    written = json.loads((examples_dir() / f"{name}.json").read_text(encoding="utf-8"))
    return cast(dict, Shift.between(AUTHORED, today).resource(written))


def render(name: str, today: date) -> str:
    """``request`` in the files' layout (2-space indent, final newline)."""
    return json.dumps(request(name, today), indent=2, ensure_ascii=False) + "\n"
