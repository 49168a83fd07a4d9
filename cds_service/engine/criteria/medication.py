"""Active medication orders and statements of the cramp-drug classes a rule names.

A MedicationRequest is an order; a MedicationStatement records what the patient takes,
whoever prescribed it (a common way to keep the medication list). Both are read, the
medicine of either given as a code (``medicationCodeableConcept``) or as a reference to a
contained (``#id``) or bundled Medication; an order and a statement of the same ingredient
make one fact, the newer, which says whether it was ordered or recorded as taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.criteria.coded import keep_newest_per_item
from cds_service.engine.dates import when_of
from cds_service.engine.facts import Fact, MedicationOrder
from cds_service.engine.fhir_status import MEDICATION_ACTIVE
from cds_service.engine.model import RuleError
from cds_service.engine.reading import medication_when, not_taken_now
from cds_service.engine.shapes import Resource, Spec
from cds_service.engine.terminology import codings_of

if TYPE_CHECKING:
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.medications import DrugInfo, Matches
    from cds_service.engine.record import Record

STATEMENT_TAKEN = ("active",)
"""The MedicationStatement statuses (FHIR R4, a modifier) that mean the patient takes the
medicine now: only ``active`` ("still being taken").

A medication rule is read both ways: as a possible cause of cramps to review, and as an
exception ("anticoagulant since the DVT" turns an emergency card into a warning; "on thyroid
hormone" explains a suppressed TSH). So only a medicine actually being taken may count:

- ``intended`` ("may be taken in the future") is not yet taken: it cannot cause today's
  cramps, and counting it would call an untreated DVT treated;
- ``on-hold`` ("temporarily halted") is not being taken now, for the same reasons;
- ``completed``, ``stopped`` (no longer taken), ``not-taken`` (never consumed),
  ``entered-in-error`` (as if never recorded) and ``unknown`` (not known whether it is
  taken) do not say the patient takes it.

A tuple, in the order the prefetch template lists them (``protocol.prefetch``).
"""


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
                started = when_of(medication_when(ev.record.read, resource))
                if started is None or started.date() < since:
                    continue
            for info, how in matches:
                if info.drug_class in self.classes:
                    facts.append(medication_fact(self.id, resource, info, how, ev.record))
                    break
        # Repeated orders of one medicine, or an order and a statement of it: the newest.
        return keep_newest_per_item(facts)


def active_medications(ev: Evaluation) -> list[tuple[Resource, Matches]]:
    """Active medication orders and statements with the cramp-drug classes they belong to."""
    classifier = ev.route.medications
    found: list[tuple[Resource, Matches]] = []
    if classifier is None:
        return found
    now = ev.record.now
    for rtype, statuses in (
        ("MedicationRequest", MEDICATION_ACTIVE),
        ("MedicationStatement", STATEMENT_TAKEN),
    ):
        for resource in ev.record.resources(rtype):
            if resource.get("status") not in statuses or not_taken_now(
                ev.record.read, resource, now
            ):
                continue
            matches = classifier.classify(resource, ev.record)
            if matches:
                found.append((resource, matches))
    return found


def medication_fact(
    criterion_id: str, resource: Resource, info: DrugInfo, how: str, record: Record
) -> Fact:
    """One medicine: name as ordered or recorded, class, status, date, how it was matched,
    the strength of its link with cramps (the class's ``evidence``), and whether it was
    ordered or recorded as taken (a statement is no order: the card must not say "ordered")."""
    started = when_of(medication_when(record.read, resource))
    kind = "statement" if resource.get("resourceType") == "MedicationStatement" else "order"
    evidence = MedicationOrder(
        medication_name(resource, record) or info.ingredient,
        info.class_label,
        info.ingredient,
        resource.get("status"),
        started,
        how,
        info.evidence,
        source_kind=kind,
        drug_class=info.drug_class,
    )
    return Fact(criterion_id, evidence, (resource,), started)


def medication_name(resource: Resource, record: Record) -> str | None:
    """The medicine's name as recorded: its code's first display or its text, or those of
    the Medication it references (contained or bundled), or the reference's display."""
    medication = record.medication_of(resource)
    for concept in (
        resource.get("medicationCodeableConcept"),
        medication.get("code") if medication is not None else None,
    ):
        for _system, _code, display in codings_of(concept):
            if display:
                return display
        if isinstance(concept, dict) and isinstance(concept.get("text"), str) and concept["text"]:
            return str(concept["text"])
    reference = resource.get("medicationReference")
    display = reference.get("display") if isinstance(reference, dict) else None
    return display if isinstance(display, str) and display else None
