"""Criteria on coded problems and procedures: a code of a value set, in a look-back window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.dates import Read, last_of, when_of
from cds_service.engine.facts import CodedProblem, Fact, ProcedureDone, RecordedFinding
from cds_service.engine.fhir_status import OBSERVATION_FINAL, PROCEDURE_DONE, condition_counts
from cds_service.engine.reading import abatement, observation_when, onset, procedure_when
from cds_service.engine.shapes import Resource, Spec
from cds_service.engine.terminology import ICD10CM, Concept, ValueSet, codings_of

if TYPE_CHECKING:
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.record import Record

FINDING_STATUSES = OBSERVATION_FINAL | {"preliminary"}  # a sign recorded as an Observation


@dataclass
class ConditionCriterion(Criterion):
    """Coded problems (and, with ``also_observations``, findings recorded as Observations)
    whose onset or recorded date lies in the window.

    ``undated: recent``: an active problem with no usable date counts as recent (an acute
    DVT on a problem list often has none), and the card says so.
    """

    type_name = "condition"

    value_sets: tuple[ValueSet, ...]
    undated_counts: bool
    persisting: timedelta | None
    also_observations: bool

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        days = spec.get("persisting_days")
        return dict(
            value_sets=tuple(defs.value_set(n, where) for n in spec["value_sets"]),
            undated_counts=spec.get("undated") == "recent",
            persisting=timedelta(days=days) if days is not None else None,
            also_observations=spec.get("also_observations", False),
        )

    @property
    def resource_types(self) -> tuple[str, ...]:
        return ("Condition", "Observation") if self.also_observations else ("Condition",)

    def need(self) -> Need:
        return Need(
            "data", frozenset((t, vs) for t in self.resource_types for vs in self.value_sets)
        )

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        record = ev.record
        since = ev.window_start(self)
        # Lasting since a day, counted in calendar days of the local zone: the time of day an
        # onset was written with (or without) never decides whether it has lasted long enough.
        persisting = (
            record.now.astimezone(record.local).date() - self.persisting
            if self.persisting is not None
            else None
        )
        tomorrow = record.read.tomorrow  # a date from then on is after today: not read
        facts: list[Fact] = []
        seen: set[int] = set()
        for rtype in self.resource_types:
            for value_set in self.value_sets:
                for resource, concept in record.find(rtype, value_set):
                    if id(resource) in seen or record.known_invalid(resource):
                        continue
                    dates = _dates(record, rtype, resource)
                    if dates is None:
                        continue
                    known = [d for d in dates if isinstance(d, datetime) and d < tomorrow]
                    undated = not known
                    if persisting is not None and (
                        undated or min(known).astimezone(record.local).date() > persisting
                    ):
                        continue
                    # A partial or approximate date is in the window if any of it is (a DVT
                    # of "2026-11" may be last week's): never missed for its precision.
                    if since is not None and (
                        undated
                        and not self.undated_counts
                        or known
                        and max(map(last_of, known)) < since
                    ):
                        continue
                    seen.add(id(resource))
                    facts.append(
                        condition_fact(
                            record,
                            self.id,
                            resource,
                            concept,
                            undated_counted=undated and since is not None,
                        )
                    )
        return keep_newest_per_item(facts)


def _dates(record: Record, rtype: str, resource: Resource) -> tuple[Read, Read] | None:
    """(onset, recorded) of a problem that counts, (date, None) of a finding; None if not."""
    if rtype == "Condition":
        read = problem(record, resource)
        return None if read is None else (read.onset, read.recorded)
    if resource.get("status") in FINDING_STATUSES:
        return (observation_when(record.read, resource), None)
    return None


class Problem(NamedTuple):
    """A Condition as read: onset in any of its forms and recorded date (problem lists
    often carry only one), and an abatement that does not end it (unreadable, after today),
    shown on its evidence line."""

    onset: Read
    recorded: Read
    abatement: Read


def problem(record: Record, resource: Resource) -> Problem | None:
    """The Condition as the rules read it, None when it does not count (its statuses,
    ``condition_counts``, or an abatement that ends it by now). Read once per call, in the
    record's memo: the gate, every criterion whose value sets it is in and each of their
    facts ask about the same few problems."""
    key = ("problem", id(resource))
    memo = record.memo
    if key in memo:
        found: Problem | None = memo[key]
        return found
    found = None
    if condition_counts(resource):
        ended, abated = abatement(record.read, resource, record.birth)
        if not abated:
            found = _read_problem(record, resource, ended)
    memo[key] = found
    return found


def _read_problem(record: Record, resource: Resource, ended: Read) -> Problem:
    return Problem(
        onset(record.read, resource, record.birth),
        record.read.date(resource.get("recordedDate")),
        ended,
    )


def counts(record: Record, resource: Resource) -> bool:
    """A problem that counts: its statuses (``condition_counts``) and not ended by now."""
    return problem(record, resource) is not None


@dataclass
class ProcedureCriterion(Criterion):
    """A completed (or in-progress) procedure in the window; the newest per code."""

    type_name = "procedure"

    value_sets: tuple[ValueSet, ...]

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        return dict(value_sets=tuple(defs.value_set(n, where) for n in spec["value_sets"]))

    def need(self) -> Need:
        return Need("data", frozenset(("Procedure", vs) for vs in self.value_sets))

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        record = ev.record
        since = ev.window_start(self)
        tomorrow = record.read.tomorrow  # after today, as for problems and results
        best: dict[str, tuple[datetime, Resource, Concept]] = {}
        for value_set in self.value_sets:
            for resource, concept in record.find("Procedure", value_set):
                if resource.get("status") not in PROCEDURE_DONE:
                    continue
                when = when_of(procedure_when(record.read, resource))
                if when is None or (since is not None and when < since) or when >= tomorrow:
                    continue
                current = best.get(concept.code)
                if current is None or when > current[0]:
                    if not record.known_invalid(resource):
                        best[concept.code] = (when, resource, concept)
        return [
            Fact(self.id, ProcedureDone(concept, when), (resource,), when)
            for when, resource, concept in sorted(best.values(), key=lambda t: t[0], reverse=True)
        ]


def keep_newest_per_item(facts: list[Fact]) -> list[Fact]:
    """One fact per coded problem or medicine (the newest), as problem lists repeat entries."""
    newest: dict[str, Fact] = {}
    for fact in facts:
        current = newest.get(fact.item)
        if current is None or (fact.when and (current.when is None or fact.when > current.when)):
            newest[fact.item] = fact
    return list(newest.values())


def _actual_code(resource: Resource, concept: Concept) -> Concept:
    """For an ICD-10-CM prefix match (e.g. I82.4*), the code the resource really carries."""
    for system, code, display in codings_of(resource.get("code")):
        if (
            system == ICD10CM == concept.system
            and code != concept.code
            and code.startswith(concept.code)
        ):
            return Concept(system, code, display or concept.display)
    return concept


def condition_fact(
    record: Record,
    criterion_id: str,
    resource: Resource,
    concept: Concept,
    undated_counted: bool = False,
) -> Fact:
    """The evidence of a coded problem: code, clinical status and dates as recorded (an
    onset is never inferred from the date the entry was recorded; one that cannot be read
    is shown as written)."""
    concept = _actual_code(resource, concept)
    if resource.get("resourceType") == "Observation":
        found = observation_when(record.read, resource)
        return Fact(criterion_id, RecordedFinding(concept, found), (resource,), when_of(found))
    read = problem(record, resource) or _read_problem(  # one that does not count: as it is
        record, resource, abatement(record.read, resource, record.birth)[0]
    )
    began, recorded, ended = read
    status = "active"
    for _s, code, _d in codings_of(resource.get("clinicalStatus")):
        status = code
    evidence = CodedProblem(concept, status, began, recorded, undated_counted, ended)
    return Fact(criterion_id, evidence, (resource,), when_of(began) or when_of(recorded))
