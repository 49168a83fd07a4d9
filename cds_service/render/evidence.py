"""The engine's facts in words: one line for the card's evidence, a few words for its
summary. Every wording of a finding lives here (the engine returns structured facts)."""

from __future__ import annotations

import re
from functools import singledispatch

from cds_service.engine import units
from cds_service.engine.concepts import ObservationConcept
from cds_service.engine.facts import (
    CodedProblem,
    Discordance,
    Estimate,
    Fact,
    FlaggedResult,
    LabResult,
    MedicationOrder,
    MissingResult,
    ProcedureDone,
    Quantity,
    RecordedFinding,
    UnusableResult,
)
from cds_service.engine.quality import CRITICAL_FLAGS
from cds_service.render.dates import day, on
from cds_service.render.quantities import (
    as_recorded,
    as_reported,
    in_threshold_unit,
    read_note,
    value_text,
)
from cds_service.render.quantities import format_number as format_number  # read by explain


def text(fact: Fact) -> str:
    """The fact's line in the card's evidence; worded once per fact (the card's detail and
    its fingerprint both ask)."""
    line = fact.wording.get("text")
    if line is None:
        line = fact.wording["text"] = _text(fact.evidence)
    return line


def unique(facts: list[Fact]) -> list[Fact]:
    """Each finding once: two rules may report the same result (an eGFR below 30, and the
    same eGFR sustained): the fuller line stands where the first was."""
    kept: list[Fact] = []
    for fact in facts:
        same = next((i for i, k in enumerate(kept) if _same_finding(k, fact)), None)
        if same is None:
            kept.append(fact)
        elif len(text(fact)) > len(text(kept[same])):
            kept[same] = fact
    return kept


def _same_finding(a: Fact, b: Fact) -> bool:
    if text(a) == text(b):
        return True
    kind = type(a.evidence)
    return (
        kind is type(b.evidence)
        and kind is not MissingResult
        and bool(a.references and b.references)
        and a.references[0] == b.references[0]  # the result itself; then what it rests on
    )


def short(fact: Fact) -> str:
    """The fact in a few words, for the card's summary."""
    return _short(fact.evidence)


def missing(fact: Fact) -> str:
    """For a missing result, "potassium (3 months; last ...)"; otherwise ""."""
    evidence = fact.evidence
    if not isinstance(evidence, MissingResult):
        return ""
    if evidence.last is None:
        brief = "none on record" if not evidence.unplaced else "none with a readable date"
    else:
        last = evidence.last
        brief = f"last {value_text(last.concept, last.value)} {on(last.when)}, {last.code.label}"
    if evidence.unplaced:
        brief += f"; {evidence.unplaced} dated unreadably or after today: review"
    return f"{_bare(evidence.label)} ({evidence.months} months; {brief})"


def _bare(label: str) -> str:
    return re.sub(r" \(.*\)", "", label)


@singledispatch
def _text(evidence: object) -> str:
    raise TypeError(f"no wording for {type(evidence).__name__}")


@singledispatch
def _short(evidence: object) -> str:
    raise TypeError(f"no wording for {type(evidence).__name__}")


@_text.register
def _(e: CodedProblem) -> str:
    onset, recorded = (day(e.onset) if e.onset else None), (day(e.recorded) if e.recorded else None)
    if onset and recorded and recorded != onset:
        dates = f"onset {onset}, recorded {recorded}"
    elif onset:
        dates = f"onset {onset}"
    elif recorded:
        dates = f"recorded {recorded} (onset not recorded)"
    else:
        dates = "onset and recorded date not recorded"
    if e.undated_counted:
        dates += ": counted as recent, check when it began"
    if e.abatement is not None:  # recorded, but it does not say the problem has ended
        dates += f"; abatement recorded ({day(e.abatement)}), not read as resolved: check"
    return f"{e.code.display} ({e.code.label}), {e.status}, {dates}"


@_short.register
def _(e: CodedProblem) -> str:
    return e.code.display


@_text.register
def _(e: RecordedFinding) -> str:
    return f"{e.code.display} ({e.code.label}), recorded as a finding {on(e.when)}"


@_short.register
def _(e: RecordedFinding) -> str:
    return e.code.display


@_text.register
def _(e: ProcedureDone) -> str:
    return f"{e.code.display} ({e.code.label}), performed {day(e.when)}"


@_short.register
def _(e: ProcedureDone) -> str:
    return f"{e.code.display.lower()} {on(e.when)}"


@_text.register
def _(e: LabResult) -> str:
    concept, shown, dated = e.concept, _lab_value(e), on(e.when)
    if e.estimate is not None:
        derived = _estimate(e.estimate)
        line = f"{concept.label} {shown} {dated}, **estimated** with CKD-EPI 2021 from {derived}"
    elif e.correction is not None:
        c = e.correction
        derived = (
            f"measured {value_text(concept, c.measured)}, corrected for albumin "
            f"{value_text(c.albumin, c.albumin_value)} ({day(c.albumin_when)})"
        )
        line = f"{concept.label} {shown} {dated} ({e.code.label}; {derived})"
    else:
        reported = as_reported(concept, e.reported) + read_note(e.reported)
        line = f"{concept.label} {shown} {dated} ({e.code.label}{reported})"
    t = e.threshold
    limit = f"{t.comparator} {format_number(t.value, 2)} {units.display_label(t.unit)}".rstrip()
    line += f"; threshold {limit}{_discordance(concept, e.discordance)}"
    if e.earlier is not None:
        line += (
            f"; also {value_text(concept, e.earlier.value)} {on(e.earlier.when)} "
            f"({e.earlier.code.label}), {(e.when - e.earlier.when).days} days earlier: "
            "**sustained**"
        )
    return line


@_short.register
def _(e: LabResult) -> str:
    concept, shown, dated = e.concept, _lab_value(e, both=False), on(e.when)
    if e.estimate is not None:
        brief = f"estimated {concept.label} {shown} {dated}"
    elif e.correction is not None:
        brief = f"{concept.label} {shown} (corrected) {dated}"
    else:
        brief = f"{concept.label} {shown} {dated}"
    return f"{brief}, sustained" if e.earlier is not None else brief


def _lab_value(e: LabResult, both: bool = True) -> str:
    """The value with the comparator the laboratory reported ("<2.5 mmol/L"): a censored
    result is never shown as a point value. Shown in the concept's display unit and, when
    the threshold is in another unit, in that one too ("1.5 mg/dL (0.62 mmol/L)"), so the
    reader compares like with like."""
    comparator = e.reported.comparator if e.estimate is None and e.correction is None else None
    prefix = comparator if comparator in {"<", "<=", ">", ">="} else ""
    return prefix + value_text(e.concept, e.value) + (in_threshold_unit(e) if both else "")


def _estimate(estimate: Estimate) -> str:
    creatinine = value_text(estimate.creatinine, estimate.value)
    return f"creatinine {creatinine} ({estimate.code.label}), age {estimate.age}, {estimate.sex}"


def _discordance(concept: ObservationConcept, d: Discordance | None) -> str:
    if d is None:
        return ""
    if d.other_estimate is None:
        reported = as_reported(concept, d.other_reported or Quantity())
        other = (
            f"reported {concept.label} {value_text(concept, d.other_value)} "
            f"({d.other_code.label}{reported})"
        )
    else:
        other = (
            f"{concept.label} {value_text(concept, d.other_value)} estimated from "
            f"{_estimate(d.other_estimate)}"
        )
    return (
        f". **Discordant**: the same-day {other} differs by more than "
        f"{round(d.margin * 100)} %; the lower value is used, check both"
    )


@_text.register
def _(e: FlaggedResult) -> str:
    return (
        f"{e.concept.label} flagged {CRITICAL_FLAGS[e.flag]} ({e.flag}) by the laboratory "
        f"{on(e.when)} ({e.code.label}), with {e.reason}: no number to confirm it, "
        "treated as critical"
    )


@_short.register
def _(e: FlaggedResult) -> str:
    return f"{e.concept.label} flagged {CRITICAL_FLAGS[e.flag]} {on(e.when)}"


@_text.register
def _(e: UnusableResult) -> str:
    recorded = as_recorded(e.recorded)
    if e.unplaced:  # "Potassium 2.3 mmol/L (LOINC 2823-3), date unreadable ("yesterday")"
        dated = day(e.when) + (f", {e.reason}" if e.reason else "")
        return (
            f"{e.concept.label} {recorded or 'result'} ({e.code.label}), {dated}: not used by "
            "any rule, review this result"
        )
    if e.implausible:
        return (
            f"{e.concept.label} {recorded} {on(e.when)} ({e.code.label}) is implausible: "
            "check the result (not used by any rule)"
        )
    return (
        f"{e.concept.label} result {on(e.when)} ({e.code.label}) cannot be read "
        f"({e.reason}{': ' + recorded if recorded else ''}): review this result"
    )


@_short.register
def _(e: UnusableResult) -> str:
    return f"review {e.concept.label.lower()} result"


@_text.register
def _(e: MissingResult) -> str:
    if e.last is None:
        tail = "none on record" if not e.unplaced else "none with a date that can be read"
    else:
        last = e.last
        tail = (
            f"last: {last.concept.label} {value_text(last.concept, last.value)} on "
            f"{day(last.when)}, {last.code.label}"
        )
    if e.unplaced:
        tail += f"; {e.unplaced} more whose date cannot be read or is after today: review"
    return f"No {e.label} result in the last {e.months} months ({tail})"


@_short.register
def _(e: MissingResult) -> str:
    return "no recent " + _bare(e.label)


def medication_since(e: MedicationOrder) -> str:
    """How the medicine is known, and since when: an order ("ordered 2026-07-27") or a
    MedicationStatement, which is no order ("recorded as taken since 2026-07-27")."""
    if e.source_kind == "statement":
        return f"recorded as taken since {day(e.started)}" if e.started else "recorded as taken"
    return f"ordered {day(e.started)}" if e.started else "order date not recorded"


@_text.register
def _(e: MedicationOrder) -> str:
    since = medication_since(e)
    link = f"; link with cramps: {e.link_with_cramps}" if e.link_with_cramps else ""
    ingredient = "" if e.ingredient.lower() in e.name.lower() else f" ({e.ingredient})"
    return f"{e.name[:60]}: {e.class_label}{ingredient}, {e.status}, {since} ({e.how}{link})"


@_short.register
def _(e: MedicationOrder) -> str:
    return e.ingredient
