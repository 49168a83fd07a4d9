"""Whether a lab result can be used for a rule: usable, unreadable or implausible.

design.md's data rule: only a number in a convertible unit, inside the concept's plausible
range, meets a threshold or counts as measured. Anything else is shown for review and never
read as normal or as present. A critical interpretation flag (LL, HH, AA) is kept so that
urgent rules can act on a flagged result whose number cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from cds_service.engine.reading import quantity_of
from cds_service.engine.shapes import Resource

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept

USABLE = "usable"
UNREADABLE = "unreadable"
IMPLAUSIBLE = "implausible"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CRITICAL_FLAGS = {"LL": "critical low", "HH": "critical high", "AA": "critical abnormal"}


@dataclass(frozen=True)
class Reading:
    """A result as the rules may use it: ``value`` (canonical unit) only when usable."""

    status: str
    value: float | None = None
    reason: str = ""
    flag: str | None = None  # LL, HH or AA when the laboratory flagged the result critical

    @property
    def usable(self) -> bool:
        return self.status == USABLE


def assess(concept: ObservationConcept, resource: Resource) -> Reading:
    """Read one Observation of ``concept``: usable, unreadable (and why) or implausible."""
    flag = critical_flag(resource)
    quantity = quantity_of(resource)
    if quantity is None:
        if isinstance(resource.get("valueString"), str):
            return Reading(UNREADABLE, reason="a text value only", flag=flag)
        if resource.get("interpretation"):
            return Reading(UNREADABLE, reason="an interpretation only, no value", flag=flag)
        return Reading(UNREADABLE, reason="no value", flag=flag)
    number = quantity.get("value")
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return Reading(UNREADABLE, reason="no numeric value", flag=flag)
    unit = quantity.get("code") or quantity.get("unit")
    if not unit and not concept.unitless:
        # "2.9" as text: the unit is never guessed from the test's usual one.
        reason = (
            "a number written as text, with no unit" if quantity.get("from_text") else "no unit"
        )
        return Reading(UNREADABLE, reason=reason, flag=flag)
    value = concept.value_in(quantity)
    if value is None:
        return Reading(
            UNREADABLE, reason=f"a unit that cannot be converted ({str(unit)[:20]})", flag=flag
        )
    if concept.plausible is not None:
        low, high = concept.plausible
        if not low <= value <= high:
            return Reading(IMPLAUSIBLE, reason="outside the plausible range", flag=flag)
    return Reading(USABLE, value, flag=flag)


def critical_flag(resource: Resource) -> str | None:
    """LL, HH or AA from ``Observation.interpretation`` (v3 ObservationInterpretation)."""
    interpretations = resource.get("interpretation")
    if not isinstance(interpretations, list):
        return None
    for concept in interpretations:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else ():
            if not isinstance(coding, dict):
                continue
            code, system = coding.get("code"), coding.get("system")
            if code in CRITICAL_FLAGS and system in (None, INTERPRETATION):
                return cast(str, code)  # a key of CRITICAL_FLAGS
    return None
