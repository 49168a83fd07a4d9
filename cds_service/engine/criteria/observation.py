"""A lab result against a threshold: the newest usable result decides.

Totals calcium are corrected for a low albumin, an eGFR may be estimated from creatinine
(CKD-EPI 2021) and compared with the reported one, an earlier result can make the finding
sustained, and a critical laboratory flag stands in for a number that cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from cds_service.engine import egfr
from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.facts import (
    Correction,
    Discordance,
    EarlierResult,
    Estimate,
    Fact,
    FlaggedResult,
    Found,
    LabResult,
    Quantity,
    Threshold,
)
from cds_service.engine.quality import UNREADABLE
from cds_service.engine.reading import quantity_of
from cds_service.engine.shapes import Resource, Spec
from cds_service.engine.thresholds import cut_off

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.results import ValuedResult

DEFAULT_STATUSES = "result-final"


@dataclass
class ObservationCriterion(Criterion):
    type_name = "observation"

    concept: ObservationConcept
    threshold: Threshold
    limit: float  # the threshold in the concept's unit, converted once
    statuses: frozenset[str]
    aggregate: str | None  # max/min over the window instead of the newest
    estimate_from: ObservationConcept | None  # creatinine, when eGFR may be estimated
    discordance_margin: float
    sustained: timedelta | None
    critical_flags: tuple[str, ...]
    age_from: float | None
    age_below: float | None
    threshold_name: str | None  # the named threshold (cards/shared/ thresholds:) it reads

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        concept = defs.concept(spec["concept"], where)
        estimate = None
        if spec.get("estimate") == "ckd-epi-2021":
            estimate = defs.concept(spec.get("estimate_from", "creatinine"), where)
        days = spec.get("sustained_days")
        return dict(
            concept=concept,
            **cut_off(spec, concept, defs.thresholds, where),
            statuses=defs.statuses(spec, where, DEFAULT_STATUSES),
            aggregate=spec.get("aggregate"),
            estimate_from=estimate,
            discordance_margin=spec.get("discordance_margin", 0.3),
            sustained=timedelta(days=days) if days is not None else None,
        )

    def need(self) -> Need:
        concepts = [self.concept] + ([self.estimate_from] if self.estimate_from else [])
        return Need("data", frozenset(("Observation", c.value_set) for c in concepts))

    def _age_applies(self, ev: Evaluation) -> bool:
        """The CDC childhood lead values apply below 18, the adult ones from 18."""
        if self.age_from is None and self.age_below is None:
            return True
        age = ev.record.age_on(ev.record.now)
        if self.age_below is not None and (age is None or age >= self.age_below):
            return False
        return not (self.age_from is not None and age is not None and age < self.age_from)

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        if not self._age_applies(ev):
            return []
        since = ev.window_start(self)
        newest = ev.deciding(self.concept, since, self.statuses, self.aggregate)
        if self.estimate_from is not None:
            newest = self._with_estimate(ev, newest)
        comparator = self.threshold.comparator
        hits = [
            r for r in newest if meets(r.value, comparator_of(r.resource), comparator, self.limit)
        ]
        if not hits:
            if not newest and self.critical_flags:
                return self._flagged(ev, since)
            return []
        # Among same-instant results that meet the threshold, report the most extreme.
        latest = (min if comparator in {"<", "<="} else max)(hits, key=lambda r: r.value)
        earlier = None
        sources: tuple[Resource, ...] = (latest.resource,)
        if self.sustained is not None:
            found = self._earlier_hit(ev, since, latest)
            if found is None:
                return []
            earlier = EarlierResult(found[1], found[0], found[3])
            sources += (found[2],)
        evidence = LabResult(
            self.concept,
            latest.value,
            latest.when,
            latest.code,
            self.threshold,
            Quantity.of(latest.resource),
            latest.estimate,
            latest.correction,
            latest.discordance,
            earlier,
        )
        return [Fact(self.id, evidence, sources, latest.when)]

    def _earlier_hit(
        self, ev: Evaluation, since: datetime | None, latest: Found
    ) -> ValuedResult | None:
        """The newest usable result at least ``sustained`` before ``latest`` that also
        meets the threshold (KDIGO: a finding persisting more than 3 months)."""
        assert self.sustained is not None
        for when, value, resource, code in ev.record.labs.results_in(
            self.concept, self.statuses, since
        ):
            if when <= latest.when - self.sustained and value is not None:
                if meets(value, comparator_of(resource), self.threshold.comparator, self.limit):
                    return when, value, resource, code
                return None  # the earlier result was normal: not sustained
        return None

    def _flagged(self, ev: Evaluation, since: datetime | None) -> list[Fact]:
        """A newest result the laboratory flagged critical (LL, HH, AA) whose number cannot
        be read counts for an urgent criterion that accepts the flag (design.md)."""
        labs = ev.record.labs
        for when, _value, resource, code in labs.newest_results(self.concept, self.statuses, since):
            reading = labs.reading(self.concept, resource)
            if reading.status == UNREADABLE and reading.flag in self.critical_flags:
                evidence = FlaggedResult(self.concept, reading.flag, when, code, reading.reason)
                return [Fact(self.id, evidence, (resource,), when)]
        return []

    def _with_estimate(self, ev: Evaluation, reported: list[Found]) -> list[Found]:
        """Reported eGFR and the CKD-EPI estimate from creatinine, decided for safety.

        The newer of the two decides; on the same day (within a day) they are compared, and
        when they differ by more than ``discordance_margin`` (relative to the estimate) the
        lower one is used and the card says both.
        """
        estimate = self._estimate(ev)
        if estimate is None or not reported:
            return reported or ([estimate] if estimate else [])
        gap = estimate.when - reported[0].when
        if gap > timedelta(days=1):
            return [estimate]
        if gap < -timedelta(days=1):
            return reported
        lowest = min(reported, key=lambda r: r.value)
        margin = self.discordance_margin
        if abs(lowest.value - estimate.value) <= margin * estimate.value:
            return reported
        if estimate.value < lowest.value:
            chosen = estimate
            other = Discordance(
                lowest.value, lowest.code, Quantity.of(lowest.resource), None, margin
            )
        else:
            chosen = lowest
            other = Discordance(estimate.value, estimate.code, None, estimate.estimate, margin)
        return [
            Found(
                chosen.when,
                chosen.value,
                chosen.resource,
                chosen.code,
                chosen.estimate,
                chosen.correction,
                other,
            )
        ]

    def _estimate(self, ev: Evaluation) -> Found | None:
        creatinine = self.estimate_from
        assert creatinine is not None
        latest = ev.record.labs.newest_result(creatinine, self.statuses, ev.window_start(self))
        if latest is None:
            return None
        when, value, resource, code = latest
        if value is None:
            return None
        mg_dl = creatinine.convert(value, creatinine.unit, "mg/dL")
        age, sex = ev.record.age_on(when), ev.record.sex
        if mg_dl is None or mg_dl <= 0 or age is None or sex is None or age < 18:
            return None
        estimate = Estimate(creatinine, value, code, int(age), sex)
        return Found(when, egfr.ckd_epi_2021(mg_dl, age, sex), resource, code, estimate)


def deciding(
    ev: Evaluation,
    concept: ObservationConcept,
    since: datetime | None,
    statuses: frozenset[str],
    aggregate: str | None,
) -> list[Found]:
    """The results a threshold is compared with.

    Normally the usable results of the newest instant (for a concept read in pairs such as
    the left and right ankle-brachial index, of the newest day); with ``aggregate`` max/min,
    the most extreme usable result of the window (a fever between doses of an antipyretic).
    Total calcium is corrected for a low albumin when the concept says so.
    """
    labs = ev.record.labs
    if aggregate:
        readable = cast(  # each value checked usable
            "list[ValuedResult]",
            [r for r in labs.results_in(concept, statuses, since) if r[1] is not None],
        )
        pick = max if aggregate == "max" else min
        chosen = [pick(readable, key=lambda r: r[1])] if readable else []
    else:
        same_day = concept.paired_within == "day"
        chosen = cast(  # each value checked usable
            "list[ValuedResult]",
            [
                r
                for r in labs.newest_results(concept, statuses, since, same_day=same_day)
                if r[1] is not None
            ],
        )
    return [_corrected(ev, concept, Found(*r), statuses) for r in chosen]


def _corrected(
    ev: Evaluation, concept: ObservationConcept, found: Found, statuses: frozenset[str]
) -> Found:
    """Total calcium corrected for a low albumin of the same day or the day before."""
    correction = concept.correction
    if correction is None:
        return found
    albumin = ev.ruleset.concepts[correction["albumin"]]
    day = found.when.date()
    for when, value, _resource, _code in ev.record.labs.results_in(
        albumin, statuses, found.when - timedelta(days=2)
    ):
        if value is None or not timedelta(0) <= day - when.date() <= timedelta(days=1):
            continue
        if value >= correction["applies_below"]:
            return found
        corrected = found.value + correction["factor"] * (correction["reference"] - value)
        how = Correction(found.value, albumin, value, when)
        return Found(found.when, corrected, found.resource, found.code, correction=how)
    return found


def _compare(value: float, comparator: str, limit: float) -> bool:
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}[
        comparator
    ]


def comparator_of(resource: Resource) -> str | None:
    quantity = quantity_of(resource)
    comparator = quantity.get("comparator") if quantity is not None else None
    return comparator if comparator in {"<", "<=", ">", ">="} else None


def meets(value: float, reported: str | None, comparator: str, limit: float) -> bool:
    """Whether a result meets a threshold, honouring a reported comparator ("<5 ug/dL").

    "<5" meets "< 10" (the true value is below 5) but never ">= 5" or ">= 3" (unknown):
    a censored result only counts when it settles the question.
    """
    if reported is None:
        return _compare(value, comparator, limit)
    if reported in {"<", "<="} and comparator in {"<", "<="}:
        return value <= limit
    if reported in {">", ">="} and comparator in {">", ">="}:
        return value >= limit
    return False
