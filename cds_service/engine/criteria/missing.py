"""Lab results that are missing or cannot be used: what the primary-care workup asks for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.criteria.observation import DEFAULT_STATUSES
from cds_service.engine.facts import Fact, LastResult, MissingResult, Quantity, UnusableResult
from cds_service.engine.model import RuleError
from cds_service.engine.quality import IMPLAUSIBLE
from cds_service.engine.shapes import Resource, Spec

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.results import Result, ValuedResult


@dataclass(frozen=True)
class TestGroup:
    """Tests that answer one question (kidney function: creatinine or eGFR)."""

    label: str
    concepts: tuple[ObservationConcept, ...]
    window: timedelta
    order: str | None  # the lab order offered for it


@dataclass
class ObservationMissingCriterion(Criterion):
    """Each group of tests with no usable newest result in its window: a result that cannot
    be read or is implausible is listed for review, never counted as measured."""

    type_name = "observation-missing"

    groups: tuple[TestGroup, ...]
    statuses: frozenset[str]
    report: str  # missing, unusable (review) or both

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        groups: list[TestGroup] = []
        for group in spec["groups"]:
            order = group.get("order")
            if order is not None and order not in defs.orders:
                raise RuleError(f"{where}/groups: unknown order {order!r}")
            concepts = tuple(defs.concept(n, where) for n in group["concepts"])
            window = timedelta(days=group["lookback_days"])
            groups.append(TestGroup(group["label"], concepts, window, order))
        return dict(
            groups=tuple(groups),
            statuses=defs.statuses(spec, where, DEFAULT_STATUSES),
            report=spec.get("report", "both"),
        )

    def need(self) -> Need:
        return Need("always")

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        facts: list[Fact] = []
        labs = ev.record.labs
        for group in self.groups:
            since = ev.record.now - group.window
            unplaced = self._unplaced(ev, group)
            if self.report != "missing":  # a result that cannot be placed in time: review it
                facts.extend(unplaced)
            newest = [
                (c, r) for c in group.concepts for r in labs.newest_results(c, self.statuses, since)
            ]
            if any(r[1] is not None for _c, r in newest):
                continue
            if newest:
                if self.report != "missing":
                    facts.append(self._unusable(ev, group, newest))
                continue
            if self.report != "unusable":
                facts.append(self._missing(ev, group, len(unplaced)))
        return facts

    def _unplaced(self, ev: Evaluation, group: TestGroup) -> list[Fact]:
        """The group's results whose date cannot be read or is after today, for review."""
        record = ev.record
        facts = []
        for concept in group.concepts:
            for read, resource, code in record.labs.unplaced(concept):
                if (
                    resource.get("status") in self.statuses
                    and record.screen(resource)
                    and not record.known_invalid(resource)
                ):
                    after = "after today" if isinstance(read, datetime) else ""
                    evidence = UnusableResult(
                        concept, read, code, False, after, Quantity.of(resource), unplaced=True
                    )
                    facts.append(Fact(self.id, evidence, (resource,), None, group.order))
        return facts

    def _missing(self, ev: Evaluation, group: TestGroup, unplaced: int) -> Fact:
        labs = ev.record.labs
        newest_ever = cast(  # each value checked usable
            "list[tuple[ObservationConcept, ValuedResult]]",
            [
                (c, r)
                for c in group.concepts
                if (r := labs.newest_result(c, self.statuses)) is not None and r[1] is not None
            ],
        )
        last = None
        sources: tuple[Resource, ...] = ()
        if newest_ever:
            _concept, (when, value, resource, code) = max(newest_ever, key=lambda cr: cr[1][0])
            owner = next(c for c in group.concepts if c.value_set.match(code.system, code.code))
            last = LastResult(owner, value, when, code)
            sources = (resource,)
        months = round(group.window.days / 30.4)
        names = tuple(c.name for c in group.concepts)
        evidence = MissingResult(group.label, months, last, unplaced, names)
        return Fact(self.id, evidence, sources, None, group.order)

    def _unusable(
        self, ev: Evaluation, group: TestGroup, newest: list[tuple[ObservationConcept, Result]]
    ) -> Fact:
        concept, (when, _value, resource, code) = max(newest, key=lambda cr: cr[1][0])
        reading = ev.record.labs.reading(concept, resource)
        evidence = UnusableResult(
            concept,
            when,
            code,
            reading.status == IMPLAUSIBLE,
            reading.reason,
            Quantity.of(resource),
        )
        return Fact(self.id, evidence, (resource,), when, group.order)
