"""A chart's key data, shown beside its cards: what a reviewer checks a card against.

Age and sex, the leg-cramp problem, the other problems a rule reads, the newest result of
each lab or vital sign a rule reads and the medicines on record. Read from the request's
prefetch as sent (plain JSON), never from what the engine concluded, so a card that
misreads the record shows up against it. What a rule reads comes from the loaded rules
(the gate, the route value sets and the observation concepts), not from a list here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from cds_service.engine import RuleSet
from cds_service.engine.terminology import SHORT_NAMES, canonical_system
from cds_service.engine.units import display_label
from cds_service.render.evidence import format_number


@dataclass
class KeyData:
    patient: str  # "72-year-old female", "deceased", ...
    cramps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    medications: list[str] = field(default_factory=list)


def key_data(request: dict, ruleset: RuleSet, today: date) -> KeyData:
    prefetch = request.get("prefetch") or {}
    patient = prefetch.get("patient")
    data = KeyData(_patient(patient if isinstance(patient, dict) else {}, today))
    for condition in _entries(prefetch.get("conditions")):
        line = f"{_concept(condition.get('code'))} ({_status(condition)}, {_when(condition)})"
        if any(ruleset.gate.match(s, c) for s, c in _codings(condition.get("code"))):
            data.cramps.append(line)
        elif any(ruleset.codes.owners(s, c) for s, c in _codings(condition.get("code"))):
            data.problems.append(line)
    data.results = _results(_entries(prefetch.get("observations")), ruleset)
    for key in ("medications", "medicationstatements"):
        for medicine in _entries(prefetch.get(key)):
            if medicine.get("resourceType") in ("MedicationRequest", "MedicationStatement"):
                name = _concept(medicine.get("medicationCodeableConcept")) or _reference(
                    medicine.get("medicationReference")
                )
                data.medications.append(f"{name} ({medicine.get('status', 'no status')})")
    return data


def _patient(patient: dict, today: date) -> str:
    sex = str(patient.get("gender") or "sex not recorded")
    born = str(patient.get("birthDate") or "")
    try:
        birth = date.fromisoformat(born[:10])
        age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        text = f"{age}-year-old {sex}"
    except ValueError:
        text = f"age not recorded, {sex}"
    if patient.get("deceasedDateTime") or patient.get("deceasedBoolean"):
        text += ", deceased"
    return text


def _results(observations: list[dict], ruleset: RuleSet) -> list[str]:
    """The newest result of each concept a rule reads, in the order common.yaml lists them."""
    concept_of = {concept.value_set: concept for concept in ruleset.concepts.values()}
    newest: dict[str, tuple[str, dict]] = {}
    for observation in observations:
        for system, code in _codings(observation.get("code")):
            for value_set, _member in ruleset.codes.owners(system, code):
                concept = concept_of.get(value_set)
                if concept is None:
                    continue
                when = _when(observation)
                if concept.name not in newest or when > newest[concept.name][0]:
                    newest[concept.name] = (when, observation)
    lines = []
    for concept in ruleset.concepts.values():
        if concept.name in newest:
            when, observation = newest[concept.name]
            lines.append(f"{concept.label} {_value(observation)} ({when})")
    return lines


def _value(observation: dict) -> str:
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        written = quantity.get("unit") or quantity.get("code")
        # As on the cards: UCUM in words, and a dimensionless "1" or "{ratio}" shows no unit.
        unit = display_label(str(written)) if written else "(no unit)"
        value = quantity.get("value")
        # As a lab reports it (Synthea writes 3.7622096558494356): at most 2 decimals.
        shown = format_number(value, 2) if isinstance(value, int | float) else str(value)
        return f"{quantity.get('comparator', '')}{shown} {unit}".rstrip()
    for name in ("valueString", "valueInteger"):
        if name in observation:
            return str(observation[name])
    concept = _concept(observation.get("valueCodeableConcept"))
    return concept or "no value"


def _entries(value: object) -> list[dict]:
    if not isinstance(value, dict):
        return []
    entries = value.get("entry") if value.get("resourceType") == "Bundle" else [{"resource": value}]
    return [
        e["resource"]
        for e in entries or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _codings(concept: object) -> list[tuple[str, str]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [
        (str(c.get("system")), str(c.get("code")))
        for c in codings or []
        if isinstance(c, dict) and c.get("code")
    ]


def _concept(concept: object) -> str:
    """A CodeableConcept as a clinician reads it: its text, else a display, else its code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    for system, code in _codings(concept):
        canonical = canonical_system(system) or system
        return f"{SHORT_NAMES.get(canonical, canonical)} {code}"
    return "uncoded"


def _reference(reference: object) -> str:
    if isinstance(reference, dict):
        return str(reference.get("display") or reference.get("reference") or "unnamed medicine")
    return "unnamed medicine"


def _status(condition: dict) -> str:
    codes = [code for _system, code in _codings(condition.get("clinicalStatus"))]
    return codes[0] if codes else "no status"


def _when(resource: dict) -> str:
    """The resource's clinical date (YYYY-MM-DD), or "no date"."""
    for name in ("effectiveDateTime", "onsetDateTime", "recordedDate", "issued", "authoredOn"):
        value = resource.get(name)
        if isinstance(value, str) and value:
            return value[:10]
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return str(period["start"])[:10]
    return "no date"
