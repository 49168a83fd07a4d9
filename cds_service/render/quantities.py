"""Quantities in words: a value in its display unit, in the threshold's unit too, and as
the laboratory sent it, with UCUM codes and annotations turned into what clinicians write
("ng/mL FEU", never "ng/mL{FEU}" nor an empty unit)."""

from __future__ import annotations

from cds_service.engine import units
from cds_service.engine.concepts import ObservationConcept
from cds_service.engine.facts import LabResult, Quantity


def format_number(value: float, decimals: int) -> str:
    """At most ``decimals`` decimals, without trailing zeros (4.10 -> "4.1", 80.0 -> "80")."""
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def value_text(concept: ObservationConcept, canonical_value: float) -> str:
    """A value in the concept's unit, shown in its display unit ("2.9 mmol/L")."""
    shown = format_number(concept.in_display_unit(canonical_value), concept.decimals)
    # A dimensionless ratio (ABI) has no unit label: no trailing space.
    return f"{shown} {units.display_label(concept.display_unit)}".rstrip()


def in_threshold_unit(e: LabResult) -> str:
    """' (0.62 mmol/L)' when the threshold's unit is not the unit the value is shown in."""
    concept, unit = e.concept, e.threshold.unit
    shown = units.display_label(concept.display_unit)
    if units.display_label(unit) == shown or units.ucum_code(unit) is None:
        return ""
    converted = concept.convert(e.value, concept.unit, unit)
    if converted is None:
        return ""
    decimals = max(concept.decimals, 2) if abs(converted) < 10 else concept.decimals
    return f" ({format_number(converted, decimals)} {units.display_label(unit)})".replace(" )", ")")


def read_note(q: Quantity) -> str:
    """What was assumed to read the value: a number in a text, a unit given only as text."""
    if q.text is not None:
        return f'; read from the text "{q.text[:30]}"'
    if not q.code and isinstance(q.unit, str) and q.unit:
        return f'; unit given as text only ("{q.unit[:20]}")'
    return ""


def as_recorded(q: Quantity) -> str:
    """The value as the laboratory sent it ("45 mmol/L", "<2.5 mmol/L"), for review lines;
    a UCUM annotation in its unit is turned into words ("ng/mL FEU")."""
    if q.text is not None:
        return f'"{q.text[:40]}"'
    value = q.value
    if isinstance(value, float):
        value = format_number(value, 3)
    unit = q.unit or q.code
    parts = [value, units.display_label(unit) if isinstance(unit, str) else unit]
    shown = " ".join(str(p) for p in parts if p not in (None, "") and not isinstance(p, bool))
    prefix = q.comparator if isinstance(q.comparator, str) else ""
    return (prefix + shown)[:40]


def as_reported(concept: ObservationConcept, q: Quantity) -> str:
    """'; reported as 78 mmol/mol' when the lab used another unit than the one shown, and
    '; reported as 4.26 mL/min, used as mL/min/1.73m²' when a unit was read as another;
    nothing when the two read the same ("{ratio}" read as a plain ratio)."""
    raw, value = q.code or q.unit, q.value
    if isinstance(value, bool) or not isinstance(raw, str):
        return ""
    if raw in concept.unit_aliases:
        said, used = units.display_label(raw), units.display_label(concept.unit_aliases[raw])
        if said == used or not said:
            return ""
        return f"; reported as {format_number(float(value), 2)} {said}, used as {used or 'a ratio'}"
    unit = units.ucum_code(raw)
    if unit is None or unit == units.ucum_code(concept.display_unit):
        return ""
    said = units.display_label(unit)
    if said == units.display_label(concept.display_unit):
        return ""
    return f"; reported as {format_number(float(value), 2)} {said}".rstrip()
