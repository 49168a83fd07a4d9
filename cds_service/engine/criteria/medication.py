"""Active medication orders and statements of the cramp-drug classes a rule names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.criteria.coded import keep_newest_per_item
from cds_service.engine.facts import Fact, MedicationOrder
from cds_service.engine.fhir_status import MEDICATION_ACTIVE, medication_date
from cds_service.engine.model import RuleError
from cds_service.engine.shapes import Resource, Spec
from cds_service.engine.terminology import codings_of

if TYPE_CHECKING:
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.medications import DrugInfo, Matches


@dataclass
class MedicationCriterion(Criterion):
    type_name = "medication"

    classes: frozenset[str]
    started_on_or_after: str | None  # a criterion: only medicines ordered on or after it

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        known = defs.medications.classes if defs.medications else set()
        for name in spec["classes"]:
            if name not in known:
                raise RuleError(f"{where}/classes: unknown medication class {name!r}")
        anchor = spec.get("started_on_or_after")
        return dict(
            classes=frozenset(spec["classes"]),
            started_on_or_after=defs.criterion(anchor, where) if anchor else None,
        )

    def need(self) -> Need:
        return Need("data", frozenset({("MedicationRequest", None), ("MedicationStatement", None)}))

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        since = None
        if self.started_on_or_after is not None:  # e.g. an anticoagulant ordered after a DVT
            dates = [f.when.date() for f in ev.check(self.started_on_or_after) if f.when]
            if not dates:
                return []
            since = min(dates)
        facts: list[Fact] = []
        for resource, matches in ev.active_medications():
            if ev.record.known_invalid(resource):  # found out on an earlier attempt
                continue
            if since is not None:
                started = medication_date(resource)
                if started is None or started.date() < since:
                    continue
            for info, how in matches:
                if info.drug_class in self.classes:
                    facts.append(medication_fact(self.id, resource, info, how))
                    break
        return keep_newest_per_item(facts)  # repeated orders of one medicine: the newest


def active_medications(ev: Evaluation) -> list[tuple[Resource, Matches]]:
    """Active medication orders and statements with the cramp-drug classes they belong to."""
    classifier = ev.route.medications
    found: list[tuple[Resource, Matches]] = []
    if classifier is None:
        return found
    for rtype in ("MedicationRequest", "MedicationStatement"):
        for resource in ev.record.resources(rtype):
            if resource.get("status") not in MEDICATION_ACTIVE:
                continue
            if rtype == "MedicationStatement" and resource.get("status") != "active":
                continue
            matches = classifier.classify(resource, ev.record)
            if matches:
                found.append((resource, matches))
    return found


def medication_fact(criterion_id: str, resource: Resource, info: DrugInfo, how: str) -> Fact:
    """One medicine: name as ordered, class, status, date, how it was matched and the
    strength of its link with cramps (the class's ``evidence``)."""
    name = None
    for _s, _c, display in codings_of(resource.get("medicationCodeableConcept")):
        name = name or display
    concept = resource.get("medicationCodeableConcept")
    name = name or (concept.get("text") if isinstance(concept, dict) else None) or info.ingredient
    started = medication_date(resource)
    evidence = MedicationOrder(
        name, info.class_label, info.ingredient, resource.get("status"), started, how, info.evidence
    )
    return Fact(criterion_id, evidence, (resource,), started)
