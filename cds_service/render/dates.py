"""Dates in words, as they were written: at their precision, approximate with where they
came from, or what could not be read (``engine.dates`` says how each was read)."""

from __future__ import annotations

from datetime import datetime

from cds_service.engine.dates import (
    APPROXIMATE,
    REPORTED,
    Read,
    Unreadable,
    When,
    how_of,
    precision_of,
)


def day(when: Read | datetime) -> str:
    """A date as it was written: at its precision ("2026-12", "2009"), approximate with
    where it came from ("at age 31, about 1999"), or what could not be read."""
    if when is None:
        return "date not recorded"
    if isinstance(when, Unreadable):
        return f'date unreadable ("{when.said}")'
    how, said = how_of(when), when.said if isinstance(when, When) else ""
    precision = precision_of(when)
    if how == APPROXIMATE:
        about = f"about {when.year}" if precision == "year" else f"about {when.date().isoformat()}"
        return f"at {said}, {about}" if said.startswith("age ") else f'"{said}", {about}'
    if precision == "year":
        return str(when.year)
    if precision == "month":
        return when.strftime("%Y-%m")
    if how == REPORTED:
        return f"{when.date().isoformat()} (reported then; collection date not recorded)"
    return when.date().isoformat()


def on(when: Read | datetime) -> str:
    """ "on 2026-12-06", or the date as written when it is not a plain day."""
    shown = day(when)
    return f"on {shown}" if shown[:1].isdigit() else f"({shown})"
