"""Run a rule set over one patient record: which routes fire, with which facts.

Each route is evaluated on its own (a route that fails costs itself, not the other cards);
answers several routes ask of the record (the deciding result of a concept in a window)
are computed once per record.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING

from cds_service.engine.criteria import Criterion
from cds_service.engine.criteria.coded import condition_fact, counts
from cds_service.engine.criteria.medication import active_medications
from cds_service.engine.criteria.observation import deciding
from cds_service.engine.facts import INDICATOR_RANK, Fact, Found, RouteResult
from cds_service.engine.model import Route, RuleSet
from cds_service.engine.record import Presence, Record
from cds_service.engine.referrals import open_referral
from cds_service.engine.shapes import Resource
from cds_service.engine.steps import fitting_steps

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.medications import Matches

log = logging.getLogger(__name__)
VALIDATION_ATTEMPTS = 5  # evaluations of a route whose evidence fails R4B validation
# What ``Evaluation.deciding`` is asked, for every route: concept name, window start, statuses,
# aggregate (answered once in the record's memo).
Question = tuple[str, str, datetime | None, frozenset[str], str | None]


def evaluate(ruleset: RuleSet, record: Record) -> list[RouteResult]:
    """The routes that fire for this record, most severe first; none without an active
    leg-cramp problem or for a patient recorded as deceased."""
    if not gate_facts(ruleset, record):
        return []
    if record.deceased:
        log.info("no cards: the patient is recorded as deceased")
        return []
    results = []
    strict: Record | None = None
    for route in ruleset.routes:
        try:
            result = Evaluation(ruleset, route, record).run()
        except Exception as exc:  # malformed data the screening let through, or a defect
            log.warning(
                "route %s failed (%s); evaluated again with every resource validated",
                route.code,
                type(exc).__name__,
            )
            strict = strict or record.strict_copy()
            try:
                result = Evaluation(ruleset, route, strict).run()
            except Exception as again:  # a defect must cost one route, not every card
                log.error(
                    "route %s failed (%s); its card is left out", route.code, type(again).__name__
                )
                continue
        if result is not None:
            results.append(result)
    if strict is not None:
        strict.release()
    results.sort(key=lambda r: (-INDICATOR_RANK[r.indicator], r.route.order))
    return results


def gate_facts(ruleset: RuleSet, record: Record) -> list[Fact]:
    """The active leg-cramp problems; no cards without one."""
    return [
        condition_fact(record, "gate", resource, concept)
        for resource, concept in record.find("Condition", ruleset.gate)
        if counts(record, resource) and record.is_valid(resource)
    ]


class Evaluation:
    """Evaluates one route for one record; criteria results are memoised by id."""

    def __init__(
        self,
        ruleset: RuleSet,
        route: Route,
        record: Record,
    ) -> None:
        self.ruleset = ruleset
        self.route = route
        self.record = record
        self.results: dict[str, list[Fact]] = {}
        present = record.present() & route.presences
        self.reachable = reachable(route, present)
        self.shown = shown_reachable(route, present)

    def run(self) -> RouteResult | None:
        """The route's result, after FHIR-validating the resources its facts rest on.

        Criteria skip resources already known to be invalid; only the evidence of a result
        is validated (R4B models are costly), and if any of it fails, the route is evaluated
        again without it.
        """
        for _attempt in range(VALIDATION_ATTEMPTS):
            result = self._run_once()
            facts = result.facts + result.context if result else []
            if all([self.record.is_valid(r) for fact in facts for r in fact.sources]):
                return result
            self.results.clear()
        log.warning("route %s left out: its evidence kept failing FHIR validation", self.route.code)
        return None

    def _run_once(self) -> RouteResult | None:
        """The rules that fired, most severe first (their indicator, then their place in the
        file), so the card's summary leads with the most severe finding."""
        context: list[Fact] = []
        hits = []
        for position, criterion in self.shown:  # building blocks on demand
            found = self.check(criterion.id)
            if not found:
                continue
            if criterion.context:
                context.extend(found)
                continue
            level = criterion.indicator or self.route.indicator
            hits.append((-INDICATOR_RANK[level], position, criterion.id, level, found))
        if not hits:
            return None
        hits.sort(key=lambda hit: hit[:3])
        facts: list[Fact] = []
        for *_rank, found in hits:
            facts.extend(f for f in found if not f.hidden and not _already_shown(f, facts))
        fired = [hit[2] for hit in hits]
        return RouteResult(
            self.route,
            facts,
            context,
            fired,
            hits[0][3],
            self.route.variant_for(fired),
            self._existing_referral(),
            fitting_steps(self, fired, facts + context),
        )

    def check(self, criterion_id: str) -> list[Fact]:
        """The criterion's facts (empty: it does not hold); memoised for this route."""
        found = self.results.get(criterion_id)
        if found is not None:
            return found
        self.results[criterion_id] = found = []  # guards against reference cycles
        if criterion_id in self.reachable:
            criterion = self.route.criteria[criterion_id]
            if not (criterion.unless and any(map(self.check, criterion.unless))):
                found = self.results[criterion_id] = _shown(criterion, criterion.evaluate(self))
        return found

    def window_start(self, criterion: Criterion) -> datetime | None:
        return self.record.now - criterion.window if criterion.window is not None else None

    def deciding(
        self,
        concept: ObservationConcept,
        since: datetime | None,
        statuses: frozenset[str],
        aggregate: str | None,
    ) -> list[Found]:
        """``observation.deciding``, answered once per record for every route that asks."""
        key: Question = ("deciding", concept.name, since, statuses, aggregate)
        memo = self.record.memo
        found = memo.get(key)
        if found is None:
            found = memo[key] = deciding(self, concept, since, statuses, aggregate)
        return found

    def active_medications(self) -> list[tuple[Resource, Matches]]:
        """``medication.active_medications``, once per record and medication classifier."""
        key = ("medications", self.route.medications)  # most routes share one classifier
        memo = self.record.memo
        found = memo.get(key)
        if found is None:
            found = memo[key] = active_medications(self)
        return found

    def _existing_referral(self) -> Resource | None:
        """An open ServiceRequest for this route's referral, so no duplicate is offered."""
        return open_referral(self.record, self.route, self.ruleset.referral_words)


@lru_cache(maxsize=4096)
def reachable(route: Route, present: frozenset[Presence]) -> frozenset[str]:
    """The criteria of ``route`` that can hold given what a record holds (``present``, cut to
    what the route reads, so that records alike share the answer): every other criterion is
    settled without running it. Worked out once per route and kind of record."""
    needs = route.needs

    def possible(criterion_id: str) -> bool:
        need = needs[criterion_id]
        if need.kind == "data":
            return not present.isdisjoint(need.data)
        if need.kind == "always":
            return True
        parts = map(possible, need.parts)
        return all(parts) if need.kind == "all" else any(parts)

    return frozenset(filter(possible, needs))


@lru_cache(maxsize=4096)
def shown_reachable(
    route: Route, present: frozenset[Presence]
) -> tuple[tuple[int, Criterion], ...]:
    """The rules and context criteria of ``route`` that can hold (``reachable``), each with
    its place among the route's shown criteria: the rest are never looked at."""
    can_hold = reachable(route, present)
    return tuple(
        (position, criterion)
        for position, criterion in enumerate(route.shown)
        if criterion.id in can_hold
    )


def _shown(criterion: Criterion, found: list[Fact]) -> list[Fact]:
    """Facts in a fixed order (never the bundle's), hidden or trimmed as the rule asks."""
    if len(found) > 1 and not criterion.parts:  # a composed criterion's are ordered
        _order_facts(found)
    if criterion.evidence == "hidden":  # e.g. the cramps being new
        return [fact.as_hidden() for fact in found]
    if criterion.evidence == "newest" and found:  # one example is enough (a risk factor)
        return [found[0]] + [fact.as_hidden() for fact in found[1:]]
    return found


def _order_facts(found: list[Fact]) -> None:
    """Newest evidence first, then by what it says (its name, then all of it): the same
    chart gives the same card whatever the order of its resources. The full evidence
    (``repr``) is only compared among facts of one instant and name, which are rare."""
    ranked = sorted([(_fact_order(fact), i, fact) for i, fact in enumerate(found)])
    found.clear()
    for _key, group in groupby(ranked, key=itemgetter(0)):
        alike = [fact for _k, _i, fact in group]
        if len(alike) > 1:
            alike.sort(key=lambda fact: repr(fact.evidence))
        found.extend(alike)


def _fact_order(fact: Fact) -> tuple[float, str]:
    return (-fact.when.timestamp() if fact.when else float("inf"), fact.name)


def _already_shown(fact: Fact, facts: list[Fact]) -> bool:
    """The same evidence reached through two criteria is listed once: the same finding, or
    the same coded problem matched by two value sets (a CKD entry with SNOMED and ICD codes)."""
    for other in facts:
        if other == fact:
            return True
        if (
            len(fact.sources) == 1
            and other.sources == fact.sources
            and fact.sources[0].get("resourceType") == "Condition"
        ):
            return True
    return False
