"""Each criterion type in plain words, read from the typed rule model.

One function per criterion class (``WORDING``); a type without one is still listed, as
"a criterion of type ...", so a new rule-language feature never silently disappears from
the review pages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from cds_service.engine.criteria.coded import ConditionCriterion, ProcedureCriterion
from cds_service.engine.criteria.logic import AllOf, AnyOf
from cds_service.engine.criteria.medication import MedicationCriterion
from cds_service.engine.criteria.missing import ObservationMissingCriterion
from cds_service.engine.criteria.observation import DEFAULT_STATUSES, ObservationCriterion
from cds_service.engine.units import convert
from cds_service.render.evidence import format_number
from cds_service.render.explain.codes import (
    concept_list,
    concept_words,
    medication_lists,
    unit_label,
    value_set_list,
)
from cds_service.render.explain.model import Wording
from cds_service.render.explain.names import inner, listed, rule_name, value_set_name

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.criteria.base import Criterion
    from cds_service.engine.facts import Threshold
    from cds_service.engine.model import Route, RuleSet
    from cds_service.engine.terminology import ValueSet

COMPARATORS = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}
CONDITION_COUNTS = (
    "clinical status active, recurrence or relapse (or not stated), and not "
    "refuted or entered in error"
)
FLAG_WORDS = {"LL": "critically low", "HH": "critically high", "AA": "critically abnormal"}
# Result statuses in the order a reader expects them; any other status follows, sorted.
STATUS_ORDER = ("final", "amended", "corrected", "preliminary")


def days_words(window: timedelta) -> str:
    days = window.days
    if days % 365 == 0:
        years = days // 365
        return f"{days} days ({years} year{'s' if years > 1 else ''})"
    if days in (30, 31):
        return f"{days} days (1 month)"
    if days % 30 == 0 or days % 31 == 0 or days == 90:
        return f"{days} days (about {round(days / 30.4)} months)"
    return f"{days} day{'s' if days != 1 else ''}"


def join(items: list[str], last: str = "and") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def statuses_words(statuses: frozenset[str]) -> str:
    known = [s for s in STATUS_ORDER if s in statuses]
    return join(known + sorted(statuses - set(STATUS_ORDER)), "or")


def threshold_words(threshold: Threshold, concept: ObservationConcept | None) -> str:
    """'below 3.5 mmol/L' (and the display unit when it differs: 'below 0.7 mmol/L (1.7 mg/dL)')."""
    comparator = threshold.comparator
    words = COMPARATORS.get(comparator, comparator)
    text = (
        f"{words} ({comparator}) {format_number(threshold.value, 3)} "
        f"{unit_label(threshold.unit)}".rstrip()
    )
    if concept is not None and concept.display_unit != threshold.unit:
        shown = convert(
            threshold.value,
            threshold.unit,
            concept.display_unit,
            molar_mass=concept.molar_mass,
            valence=concept.valence,
            scale=concept.scale,
        )
        if shown is not None:
            text += (
                f" ({format_number(shown, concept.decimals)} "
                f"{unit_label(concept.display_unit)})".replace(" )", ")")
            )
    return text


def _statuses_line(words: Wording, statuses: frozenset[str], ruleset: RuleSet) -> None:
    """The statuses counted: a particular of the rule unless they are the default set."""
    default = ruleset.status_sets.get(DEFAULT_STATUSES)
    target = words.general if statuses == default else words.details
    target.append(f"Result statuses counted: {statuses_words(statuses)}.")


def _value_sets(value_sets: tuple[ValueSet, ...]) -> str:
    """The value sets by their plain names: "coded as deep vein thrombosis"."""
    return "coded as " + inner(listed([value_set_name(vs) for vs in value_sets], "or"))


def condition(criterion: ConditionCriterion, route: Route, ruleset: RuleSet) -> Wording:
    what = "an active problem (Condition)"
    if criterion.also_observations:
        what += " or a finding recorded as an Observation"
    when = f"The record holds {what} {_value_sets(criterion.value_sets)}"
    if criterion.window:
        when += f", with its onset or recorded date in the last {days_words(criterion.window)}"
    if criterion.persisting:
        when += f", that began at least {days_words(criterion.persisting)} ago"
    words = Wording(when + ".", reads=[value_set_list(vs) for vs in criterion.value_sets])
    words.general.append(f"Counts only problems with {CONDITION_COUNTS}.")
    if criterion.also_observations:
        words.details.append(
            "Findings recorded as Observations count when final, amended, corrected or preliminary."
        )
    if criterion.undated_counts:
        words.details.append(
            "A problem with no onset or recorded date counts as recent, and "
            "the card says the date is missing."
        )
    elif criterion.window:
        words.details.append("A problem with no usable date does not count.")
    return words


def procedure(criterion: ProcedureCriterion, route: Route, ruleset: RuleSet) -> Wording:
    window = f" in the last {days_words(criterion.window)}" if criterion.window else ""
    return Wording(
        f"A completed procedure {_value_sets(criterion.value_sets)} was performed{window}.",
        reads=[value_set_list(vs) for vs in criterion.value_sets],
    )


def observation(criterion: ObservationCriterion, route: Route, ruleset: RuleSet) -> Wording:
    concept = criterion.concept
    pick = {"max": "highest", "min": "lowest"}.get(str(criterion.aggregate), "newest")
    window = f" of the last {days_words(criterion.window)}" if criterion.window else ""
    words = Wording(
        f"The {pick} {inner(concept.label)} result{window} is "
        f"{threshold_words(criterion.threshold, concept)}.",
        reads=[concept_list(ruleset, concept)],
    )
    if pick == "newest":
        words.general.append(
            "The newest result decides: an older result never stands in for a "
            "newer one that cannot be read."
        )
    else:
        words.details.append(f"The {pick} result in the window decides, not the latest.")
    _statuses_line(words, criterion.statuses, ruleset)
    if criterion.age_from is not None:
        words.details.append(
            f"Only for patients aged {format_number(criterion.age_from, 1)} or over "
            "today (an unknown age counts)."
        )
    if criterion.age_below is not None:
        words.details.append(
            f"Only for patients under {format_number(criterion.age_below, 1)} today "
            "(an unknown age does not count)."
        )
    _observation_extras(words, criterion, ruleset)
    return words


def _observation_extras(words: Wording, criterion: ObservationCriterion, ruleset: RuleSet) -> None:
    """The estimate from creatinine, critical flags and a sustained finding."""
    source = criterion.estimate_from
    if source is not None:
        words.details.append(
            f"Without a newer reported {criterion.concept.label}, it is estimated with "
            f"CKD-EPI 2021 from {source.name} (adults with age and sex recorded), marked as "
            f"estimated; when a same-day reported and estimated value differ by "
            f"more than {round(criterion.discordance_margin * 100)} %, the lower one is used "
            "and both are shown."
        )
        words.reads.append(concept_list(ruleset, source))
    if criterion.critical_flags:
        flags = join([f"{f} ({FLAG_WORDS.get(f, f)})" for f in criterion.critical_flags], "or")
        words.details.append(
            f"A newest result flagged {flags} by the laboratory with no readable "
            "number also counts."
        )
    if criterion.sustained:
        words.details.append(
            f"Sustained: an earlier result at least {days_words(criterion.sustained)} "
            "before also meets the threshold."
        )


def observation_missing(
    criterion: ObservationMissingCriterion, route: Route, ruleset: RuleSet
) -> Wording:
    parts = []
    words = Wording("")
    for group in criterion.groups:
        parts.append(f"{group.label} (none usable in {days_words(group.window)})")
        for concept in group.concepts:
            if all(r.name != concept.name for r in words.reads):
                words.reads.append(concept_list(ruleset, concept))
        order = route.orders.get(group.order) if group.order else None
        if order is not None:
            words.details.append(
                f"Missing {group.label}: offers to order {concept_words(order.code)}."
            )
    words.when = f"At least one of these tests has no usable result in its window: {join(parts)}."
    words.general.append(
        "A result that cannot be read (no value, unknown unit) or is implausible "
        "is listed for review, never counted as done."
    )
    _statuses_line(words, criterion.statuses, ruleset)
    return words


def medication(criterion: MedicationCriterion, route: Route, ruleset: RuleSet) -> Wording:
    # The typed field is a set: the order the rule lists its classes in is read as written.
    written = [c for c in criterion.spec.get("classes", ()) if c in criterion.classes]
    classes = written + sorted(criterion.classes - set(written))
    reads = medication_lists(route, classes)
    labels = join([r.label for r in reads], "or")
    words = Wording(
        f"An active medication order or statement is on record for a medicine in: {labels}.",
        reads=reads,
    )
    words.general.append(
        "Medicines match by RxNorm ingredient or product code, or by ingredient "
        "or brand name in the text (a close misspelling too, marked as such)."
    )
    if criterion.started_on_or_after:
        anchor = route.criteria[criterion.started_on_or_after]
        words.details.append(
            "Only medicines ordered on or after the date of the evidence for: "
            f"{inner(rule_name(anchor, route))}."
        )
    return words


def _part_names(criterion: AllOf, route: Route) -> list[str]:
    return [rule_name(route.criteria[part], route) for part in criterion.of]


def all_of(criterion: AllOf, route: Route, ruleset: RuleSet) -> Wording:
    """The parts by name: one part is the sentence itself (never "Rule x holds")."""
    names = _part_names(criterion, route)
    if len(names) == 1:
        return Wording(f"{names[0]}.")
    return Wording(f"All of these hold: {'; and '.join(inner(n) for n in names)}.")


def any_of(criterion: AnyOf, route: Route, ruleset: RuleSet) -> Wording:
    names = _part_names(criterion, route)
    return Wording(f"Any of these holds: {'; or '.join(inner(n) for n in names)}.")


WORDING: dict[type, Callable[..., Wording]] = {
    ConditionCriterion: condition,
    ProcedureCriterion: procedure,
    ObservationCriterion: observation,
    ObservationMissingCriterion: observation_missing,
    MedicationCriterion: medication,
    AnyOf: any_of,  # before AllOf: AnyOf is its subclass
    AllOf: all_of,
}


def criterion_words(criterion: Criterion, route: Route, ruleset: RuleSet) -> Wording:
    """(one sentence, details, general data rules, what it reads) of one criterion."""
    wording = WORDING.get(type(criterion))
    if wording is None:
        return Wording(f"A criterion of type {type(criterion).type_name}.")
    return wording(criterion, route, ruleset)
