"""Named thresholds: each clinical cut-off defined once, read by name (issue 21).

A cut-off such as "CK 1000 U/L or more" is a clinical concept: the lab concept, comparator,
value and unit, plus what else counts as that finding (the laboratory's critical flags
standing in for an unreadable number; the ages the value is for). It is written once under
``thresholds:`` in ``cards/shared/``, and every criterion that compares a result with it
writes ``threshold: <name>``, keeping its own look-back window, statuses and ``sustained``
(those are the rule's question, not the concept). A literal threshold equal to a named one,
or two names for the same cut-off, is a rule file error, so a reviewer who changes the
cut-off changes it for every rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds_service.engine.facts import Threshold
from cds_service.engine.shapes import Spec
from cds_service.errors import RuleError

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept

# What a criterion naming a threshold may not write itself: they belong to the definition.
DEFINED_BY_THE_NAME = ("critical_flags", "ages")


@dataclass(frozen=True)
class NamedThreshold:
    """One ``thresholds:`` entry, compiled: ``limit`` is the value in the concept's unit."""

    name: str
    where: str  # "shared/thresholds.yaml: field thresholds/ck-very-high", for messages
    concept: ObservationConcept
    threshold: Threshold
    limit: float
    critical_flags: tuple[str, ...]
    ages: Spec = field(default_factory=dict)  # {from: 18} / {below: 18}, as written

    def same_cut_off(self, concept: ObservationConcept, comparator: str, limit: float) -> bool:
        """The same lab, comparator and value (compared in the concept's unit)."""
        return (
            concept.name == self.concept.name
            and comparator == self.threshold.comparator
            and math.isclose(limit, self.limit, rel_tol=1e-9, abs_tol=1e-12)
        )


@dataclass
class Thresholds:
    """Every named threshold of ``cards/shared/``, by name."""

    by_name: dict[str, NamedThreshold] = field(default_factory=dict)

    def add(
        self, name: str, spec: Spec, where: str, concepts: dict[str, ObservationConcept]
    ) -> None:
        """Compile one entry; a name or a cut-off (with the same ages) defined twice is refused."""
        if name in self.by_name:
            raise RuleError(f"{where}: {name!r} is already defined in {self.by_name[name].where}")
        if spec["concept"] not in concepts:
            raise RuleError(f"{where}/concept: unknown observation concept {spec['concept']!r}")
        concept = concepts[spec["concept"]]
        threshold = Threshold(spec["comparator"], spec["value"], spec["unit"])
        limit = literal_limit(concept, threshold, f"{where}/unit")
        ages = dict(spec.get("ages") or {})
        for other in self.by_name.values():
            if other.same_cut_off(concept, threshold.comparator, limit) and other.ages == ages:
                raise RuleError(
                    f"{where}: the same cut-off as {other.name!r} ({other.where}): one "
                    "definition per clinical concept, use that name"
                )
        flags = tuple(spec.get("critical_flags", ()))
        self.by_name[name] = NamedThreshold(name, where, concept, threshold, limit, flags, ages)

    def named(self, spec: Spec, concept: ObservationConcept, where: str) -> NamedThreshold:
        """The threshold a criterion names; its concept must be the criterion's own."""
        name = spec["threshold"]
        found = self.by_name.get(name)
        if found is None:
            raise RuleError(
                f"{where}/threshold: unknown named threshold {name!r} "
                "(thresholds: in cards/shared/)"
            )
        if found.concept.name != concept.name:
            raise RuleError(
                f"{where}/threshold: {name!r} is a {found.concept.name} threshold, "
                f"not {concept.name} ({found.where})"
            )
        own = [key for key in DEFINED_BY_THE_NAME if key in spec]
        if own:
            raise RuleError(
                f"{where}/{own[0]}: set by the named threshold {name!r} ({found.where}); "
                "a rule that names a threshold may not change it"
            )
        return found

    def refuse_copy(
        self, concept: ObservationConcept, threshold: Threshold, limit: float, where: str
    ) -> None:
        """A literal threshold may not repeat a named one: it would be a second definition."""
        for named in self.by_name.values():
            if named.same_cut_off(concept, threshold.comparator, limit):
                raise RuleError(
                    f"{where}/threshold: {concept.name} {threshold.comparator} "
                    f"{threshold.value:g} {threshold.unit} is the named threshold "
                    f"{named.name!r} ({named.where}): write `threshold: {named.name}`"
                )


def cut_off(
    spec: Spec, concept: ObservationConcept, thresholds: Thresholds, where: str
) -> dict[str, Any]:
    """The threshold and what else counts as the finding (critical flags, ages): those of
    the named threshold a criterion writes ``threshold: <name>`` for, else its own, which
    may not repeat a named one (an observation criterion's fields)."""
    if isinstance(spec["threshold"], str):
        named = thresholds.named(spec, concept, where)
        threshold, limit, name = named.threshold, named.limit, named.name
        flags, ages = named.critical_flags, named.ages
    else:
        threshold, name = Threshold(**spec["threshold"]), None
        limit = literal_limit(concept, threshold, f"{where}/threshold/unit")
        thresholds.refuse_copy(concept, threshold, limit, where)
        flags, ages = tuple(spec.get("critical_flags", ())), spec.get("ages") or {}
    return dict(
        threshold=threshold,
        limit=limit,
        critical_flags=flags,
        age_from=ages.get("from"),
        age_below=ages.get("below"),
        threshold_name=name,
    )


def literal_limit(concept: ObservationConcept, threshold: Threshold, where: str) -> float:
    """The threshold's value in the concept's unit; a unit that cannot be converted is refused."""
    limit = concept.convert(threshold.value, threshold.unit, concept.unit)
    if limit is None:
        raise RuleError(f"{where}: {threshold.unit!r} cannot be converted to {concept.unit!r}")
    return limit
