"""How FHIR writes the elements the rules read, read in every form: the only place that knows.

Dates (``dates``): each resource type's clinical date in all its choice forms, onset as a
date, period, age, range or text, ``issued`` only as a fallback. Values: a number written in
``valueString``. Panels: each ``component`` of an Observation as a result of its own. What
cannot be read is said (``Unreadable``), never dropped; see ``dates`` for why this is
hand-written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cds_service.engine.dates import (
    Read,
    Reader,
    first_readable,
    last_of,
    next_midnight,
    reported,
)
from cds_service.engine.shapes import Resource


def onset(reader: Reader, resource: Resource, birth: Read) -> Read:
    """Condition.onset[x] in any of its five forms."""
    get = resource.get
    usual = reader.date(get("onsetDateTime"))
    if isinstance(usual, datetime):  # most problems: one lookup
        return usual
    return first_readable(
        usual,
        reader.period(get("onsetPeriod")),
        reader.age_at(get("onsetAge"), birth) if get("onsetAge") is not None else None,
        reader.age_range(get("onsetRange"), birth) if get("onsetRange") is not None else None,
        reader.text(get("onsetString")) if get("onsetString") is not None else None,
    )


def abatement(reader: Reader, resource: Resource, birth: Read) -> tuple[Read, bool]:
    """Condition.abatement[x] read, and whether it says the problem has ended by now.

    An abatement date contradicts an "active" status (FHIR invariant con-4): a readable one
    on or before today ends the problem, as does ``abatementBoolean`` true (STU3's) and a
    text (R4: present means abated) unless the text holds a date after today. A date that
    cannot be read, or one after today, ends nothing: the problem still counts, and its
    evidence says what was recorded (a red flag is never hidden by an unreadable date)."""
    get = resource.get
    if get("abatementBoolean") is True:
        return None, True
    for name, read_form in _ABATEMENT_FORMS:
        value = get(name)
        if value is not None:
            read = read_form(reader, value, birth)
            now = reader.now
            if isinstance(read, datetime):
                return read, now is None or read <= now
            return read, name == "abatementString"  # a text without a date: R4's "abated"
    return None, False


# abatement[x]'s forms in the order they are looked for, each with how it is read (an age
# through the birth date).
_ABATEMENT_FORMS: tuple[tuple[str, Callable[[Reader, Any, Read], Read]], ...] = (
    ("abatementDateTime", lambda reader, value, _birth: reader.date(value)),
    ("abatementPeriod", lambda reader, value, _birth: reader.period(value)),
    ("abatementAge", Reader.age_at),
    ("abatementRange", Reader.age_range),
    ("abatementString", lambda reader, value, _birth: reader.text(value)),
)


def observation_when(reader: Reader, resource: Resource) -> Read:
    """The clinically relevant time of an Observation (effective[x]). ``issued`` (when it
    was reported, often the time an interface loaded it) only when no effective[x] is
    there at all, marked as the date of report; an effective time that cannot be read
    stays unreadable, never replaced by the report's date."""
    usual = reader.date(
        resource.get("effectiveDateTime") if type(resource) is dict else resource.effectiveDateTime  # type: ignore[attr-defined]  # a decoded FhirNode
    )
    if isinstance(usual, datetime):  # most results: one lookup
        return usual
    get = resource.get
    effective = first_readable(
        usual,
        reader.date(get("effectiveInstant")),
        _period_end(reader, get("effectivePeriod")),
        reader.timing(get("effectiveTiming")),
    )
    if effective is not None:
        return effective
    issued = reader.date(get("issued"))
    return reported(issued) if isinstance(issued, datetime) else issued


def died_by(reader: Reader, patient: Resource, now: datetime) -> bool:
    """Patient.deceased[x] says the patient died by ``now``. A death date that cannot be
    read still says the patient died; one after the clinical today (a replayed chart) does
    not yet apply."""
    if patient.get("deceasedBoolean") is True:
        return True
    died = reader.date(patient.get("deceasedDateTime"))
    if died is None:
        return False
    return not isinstance(died, datetime) or died < next_midnight(now, reader.local)


def procedure_when(reader: Reader, resource: Resource) -> Read:
    """When a procedure was done: performed[x] (a period's end, else its start)."""
    get = resource.get
    return first_readable(
        reader.date(get("performedDateTime")),
        _period_end(reader, get("performedPeriod")),
        reader.text(get("performedString")) if get("performedString") is not None else None,
    )


def medication_when(reader: Reader, resource: Resource) -> Read:
    """When a medicine was ordered (authoredOn) or, for a statement, taken from."""
    get = resource.get
    return first_readable(
        reader.date(get("authoredOn")),
        reader.date(get("effectiveDateTime")),
        reader.period(get("effectivePeriod")),
    )


def not_taken_now(reader: Reader, resource: Resource, now: datetime) -> bool:
    """A statement's ``effective[x]`` that has not begun (an anticoagulant to start next
    week treats no DVT today) or whose period ended before today ("active" as asserted
    then). A date that cannot be read neither starts nor ends anything."""
    period = resource.get("effectivePeriod")
    started = resource.get("effectiveDateTime")
    if period is None and started is None:  # most orders and statements: nothing to read
        return False
    period = period if isinstance(period, dict) else {}
    end = reader.date(period.get("end"))
    if isinstance(end, datetime) and last_of(end) < now:
        return True
    start = first_readable(reader.date(started), reader.date(period.get("start")))
    return isinstance(start, datetime) and start > now


def _period_end(reader: Reader, value: Any) -> Read:
    """A Period read by its end (a result of a collection period is known at its end)."""
    if not isinstance(value, dict) or value.get("end") is None:
        return reader.period(value)
    return first_readable(reader.date(value.get("end")), reader.period(value))


# The choice elements whose every form this module reads (onset[x], abatement[x] with
# STU3's abatementBoolean, effective[x], performed[x], deceasedDateTime) ...
DATED_CHOICES = frozenset(
    {f"onset{form}" for form in ("DateTime", "Age", "Period", "Range", "String")}
    | {f"abatement{form}" for form in ("DateTime", "Age", "Period", "Range", "String", "Boolean")}
    | {f"effective{form}" for form in ("DateTime", "Period", "Timing", "Instant")}
    | {f"performed{form}" for form in ("DateTime", "Period", "String", "Age", "Range")}
    | {"deceasedDateTime"}
)
# ... and with the plain dates, the elements only it reads: FHIR-validating them would cost
# the whole resource for one date written in a common invalid form (validation.py leaves
# them out).
TEMPORAL_ELEMENTS = DATED_CHOICES | {
    "recordedDate",
    "issued",
    "authoredOn",
    "dateAsserted",
    "birthDate",
}


# --- values -----------------------------------------------------------------------------

# A number written as text, with an optional comparator and unit ("<2.5 mmol/L", "2.9");
# words ("hemolyzed", "see note") are not numbers and stay text.
_NUMBER_IN_TEXT = re.compile(
    r"\s*(<=|>=|<|>)?\s*(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%/{}\[\]0-9.*^µμ]*)\s*"
)


def quantity_of(resource: Resource) -> dict[str, Any] | None:
    """The result's quantity: ``valueQuantity``, or a number written in ``valueString``
    read the same way (value, comparator, the unit as text) and marked ``from_text``."""
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        return quantity
    text = resource.get("valueString")
    if not isinstance(text, str):
        return None
    match = _NUMBER_IN_TEXT.fullmatch(text)
    if match is None:
        return None
    comparator, number, unit = match.groups()
    try:
        value = float(number)
    except ValueError:
        return None
    read: dict[str, Any] = {"value": value, "from_text": True}
    if comparator:
        read["comparator"] = comparator
    if unit:
        read["unit"] = unit
    return read


# --- panels -----------------------------------------------------------------------------

# What a component's result shares with the Observation it is part of: whose it is, its
# status and its dates (its own code, value and interpretation replace the panel's).
_PANEL_ELEMENTS = frozenset(
    {"resourceType", "id", "status", "subject", "patient", "issued"}
    | {"effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"}
)
_COMPONENT_ELEMENTS = ("code", "valueQuantity", "valueString", "interpretation")


def component_views(resource: Resource) -> list[Resource]:
    """Each coded component of an Observation as a result of its own (a right and a left
    ankle-brachial index sent as one panel): the rules read it like any result, and its
    evidence refers to the panel."""
    components = resource.get("component")
    if type(components) is not list:
        return []
    panel = {name: value for name, value in resource.items() if name in _PANEL_ELEMENTS}
    views = []
    for component in components:
        if type(component) is dict and type(component.get("code")) is dict:
            own = {name: component[name] for name in _COMPONENT_ELEMENTS if name in component}
            views.append({**panel, **own})
    return views
