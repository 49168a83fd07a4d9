"""Plain names for rules and value sets, so a reviewer never has to read an internal id.

A rule's name is its ``title:`` in the rule files when it has one (a combination usually
needs one); otherwise it is put together from what the rule reads: the value sets' titles
(``titles:`` in ``cards/valuesets/``), the lab concept's label and threshold, the medicine
classes' labels, and for a combination the names of its parts. The id stays on the page
only as a small reference, for searching the rule files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from cds_service.engine.criteria.coded import ConditionCriterion, ProcedureCriterion
from cds_service.engine.criteria.logic import AllOf, AnyOf
from cds_service.engine.criteria.medication import MedicationCriterion
from cds_service.engine.criteria.missing import ObservationMissingCriterion
from cds_service.engine.criteria.observation import ObservationCriterion
from cds_service.render.evidence import format_number
from cds_service.render.explain.codes import unit_label

if TYPE_CHECKING:
    from datetime import timedelta

    from cds_service.engine.criteria.base import Criterion
    from cds_service.engine.model import Route
    from cds_service.engine.terminology import ValueSet

COMPARATOR_WORDS = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}


def value_set_name(value_set: ValueSet) -> str:
    """Its title, else its id made readable (a value set without a title fails the tests)."""
    return value_set.title or value_set.name.replace("-", " ")


def join(items: list[str], last: str = "and") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def inner(name: str) -> str:
    """A name inside a sentence: "Potassium below 3.5" -> "potassium below 3.5", but an
    abbreviation keeps its capitals ("HbA1c", "TSH", "eGFR")."""
    return name[0].lower() + name[1:] if re.match(r"(?:[A-Z][a-z]+|An?)(?:\W|$)", name) else name


def first(name: str) -> str:
    """A name that starts a heading or sentence: "eGFR ..." stays, "potassium" -> "Potassium"."""
    return name[0].upper() + name[1:] if re.match(r"[a-z][a-z]*(\W|$)", name) else name


def listed(names: list[str], last: str = "and") -> str:
    """Names joined in a sentence, each after the first as inside a sentence."""
    return join([n if i == 0 else inner(n) for i, n in enumerate(names)], last)


def _window(window: timedelta | None) -> str:
    if not window:
        return ""
    days = window.days
    if days % 365 == 0:
        years = days // 365
        return f" in the last {years} years" if years > 1 else " in the last year"
    return f" in the last {days} day{'s' if days != 1 else ''}"


def _condition(c: ConditionCriterion, route: Route, seen: set[str]) -> str:
    text = listed([value_set_name(vs) for vs in c.value_sets], "or") + " on record"
    if c.persisting:
        text += f" for at least {c.persisting.days} days"
    return text + _window(c.window)


def _procedure(c: ProcedureCriterion, route: Route, seen: set[str]) -> str:
    return listed([value_set_name(vs) for vs in c.value_sets], "or") + " done" + _window(c.window)


def _observation(c: ObservationCriterion, route: Route, seen: set[str]) -> str:
    threshold = c.threshold
    words = COMPARATOR_WORDS.get(threshold.comparator, threshold.comparator)
    value = f"{format_number(threshold.value, 3)} {unit_label(threshold.unit)}".rstrip()
    pick = {"max": "highest ", "min": "lowest "}.get(str(c.aggregate))
    label = f"{pick}{inner(c.concept.label)}" if pick else c.concept.label
    text = first(f"{label} {words} {value}") + _window(c.window)
    if c.sustained:
        text += f", also {c.sustained.days} or more days earlier"
    if c.age_from is not None:
        text += f", aged {format_number(c.age_from, 1)} or over"
    if c.age_below is not None:
        text += f", under {format_number(c.age_below, 1)}"
    return text


def _missing(c: ObservationMissingCriterion, route: Route, seen: set[str]) -> str:
    return "No recent " + join([inner(g.label) for g in c.groups], "or") + " result"


def _medication(c: MedicationCriterion, route: Route, seen: set[str]) -> str:
    by_class = route.medications.specs if route.medications else {}
    labels = [str(by_class.get(k, {}).get("label", k)) for k in sorted(c.classes)]
    return listed(labels, "or") + " on record"


def _combination(c: AllOf, route: Route, seen: set[str]) -> str:
    names = [inner(rule_name(route.criteria[p], route, seen)) for p in c.parts]
    return join(names, "or" if isinstance(c, AnyOf) else "and")


NAMERS: dict[type, Callable[..., str]] = {
    ConditionCriterion: _condition,
    ProcedureCriterion: _procedure,
    ObservationCriterion: _observation,
    ObservationMissingCriterion: _missing,
    MedicationCriterion: _medication,
    AnyOf: _combination,
    AllOf: _combination,
}


def rule_name(criterion: Criterion, route: Route, seen: set[str] | None = None) -> str:
    """The rule's plain name: its ``title``, else one made from what it reads."""
    title = criterion.spec.get("title")
    if title:
        return " ".join(str(title).split())
    seen = set() if seen is None else seen
    namer = NAMERS.get(type(criterion))
    if namer is None or criterion.id in seen:  # an unknown type, or a loop the loader forbids
        return f"A rule of type {type(criterion).type_name}"
    seen = seen | {criterion.id}
    name = namer(criterion, route, seen)
    if criterion.unless:
        others = [inner(rule_name(route.criteria[u], route, seen)) for u in criterion.unless]
        name += ", unless " + join(others, "or")
    return first(name)


def rule_names(route: Route) -> dict[str, str]:
    """Every rule of the route by id, named."""
    return {rule_id: rule_name(c, route) for rule_id, c in route.criteria.items()}
