"""Evaluate one route's criteria against a patient record: the facts behind a card.

Each criterion type (condition, observation, observation-missing, procedure, medication,
all, any) is a method of ``Evaluation``; a criterion that holds yields facts with the
evidence (value, unit, date, code). The rule files say which criteria a route has.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import orjson

from cds_service import egfr, units
from cds_service.quality import CRITICAL_FLAGS, IMPLAUSIBLE, UNREADABLE
from cds_service.record import (
    MEDICATION_ACTIVE,
    OBSERVATION_FINAL,
    PROCEDURE_DONE,
    REFERRAL_OPEN,
    condition_counts,
    condition_dates,
    medication_date,
    observation_date,
    procedure_date,
    reference_to,
)
from cds_service.terminology import ICD10CM, RXNORM, Concept, codings_of

if TYPE_CHECKING:  # only for annotations: rules.py imports this module
    from cds_service.record import Record
    from cds_service.rules import ObservationConcept, Route, RuleSet

log = logging.getLogger(__name__)

INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
MEDICATION_MEMO_LIMIT = 4096  # distinct medications classified per route; reset when full
MEDICATION_KEY_LIMIT = 2048  # bytes of codes and names; a bigger medication is not remembered


@dataclass
class Fact:
    """One piece of evidence behind a card."""

    criterion: str
    text: str  # full line for the card detail
    short: str  # few words for the summary
    sources: list[dict] = field(default_factory=list)  # the resources it rests on
    when: datetime | None = None
    order: str | None = None  # lab order to suggest when the fact is a missing result
    hidden: bool = False  # holds for a rule but is not listed (``evidence: hidden``)
    missing: str = ""  # for a missing result: "potassium (3 months; last ...)"

    @property
    def references(self) -> list[str]:
        return [ref for ref in map(reference_to, self.sources) if ref]


def format_number(value: float, decimals: int) -> str:
    """At most ``decimals`` decimals, without trailing zeros (4.10 -> "4.1", 80.0 -> "80")."""
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _day(when: datetime | None) -> str:
    return when.date().isoformat() if when else "date not recorded"


@dataclass(frozen=True)
class Found:
    """A result a threshold is compared with: the value in the concept's unit, and how it
    was derived from what was recorded (albumin correction, CKD-EPI estimate)."""

    when: datetime
    value: float
    resource: dict
    code: Concept
    derived: str = ""  # e.g. "measured 6.8 mg/dL, corrected for albumin 2 g/dL (...)"
    estimated: bool = False  # computed from another result (eGFR from creatinine)
    conflict: str = ""  # a same-day result that disagrees, said on the card


@dataclass
class RouteResult:
    route: Route
    facts: list[Fact]
    context: list[Fact]
    fired: list[str]
    indicator: str
    variant: dict | None
    existing_referral: dict | None

    @property
    def content(self) -> list[dict]:
        """The next step, caveats and links of each rule that fired, most severe first."""
        seen, blocks = set(), []
        for criterion_id in self.fired:
            name = self.route.content_of.get(criterion_id)
            if name is not None and name not in seen:
                seen.add(name)
                blocks.append(self.route.data["content"][name])
        return blocks


class Evaluation:
    """Evaluates one route for one record; criteria results are memoised by id."""

    def __init__(self, ruleset: RuleSet, route: Route, record: Record):
        self.ruleset = ruleset
        self.route = route
        self.record = record
        self.by_id = route.by_id
        self.results: dict[str, list[Fact]] = {}
        self.present = record.present()
        self._medications: list[tuple[dict, list]] | None = None

    def run(self) -> RouteResult | None:
        """The route's result, after FHIR-validating the resources its facts rest on.

        Criteria skip resources already known to be invalid; only the evidence of a
        result is validated (R4B models are costly), and if any of it fails, the route
        is evaluated again without it.
        """
        for _attempt in range(5):
            result = self._run_once()
            sources = [
                r
                for fact in (result.facts + result.context if result else [])
                for r in fact.sources
            ]
            if all([self.record.is_valid(r) for r in sources]):
                return result
            self.results.clear()
        log.warning("route %s left out: its evidence kept failing FHIR validation", self.route.code)
        return None

    def _run_once(self) -> RouteResult | None:
        """The criteria that fired, most severe first (their indicator, then their place in
        the file), so the card's summary leads with the most severe finding."""
        context: list[Fact] = []
        hits = []
        for position, criterion in enumerate(self.route.shown):  # building blocks run on demand
            found = self.check(criterion["id"])
            if not found:
                continue
            if criterion.get("context"):
                context.extend(found)
                continue
            level = criterion.get("indicator", self.route.indicator)
            hits.append((-INDICATOR_RANK[level], position, criterion["id"], level, found))
        if not hits:
            return None
        hits.sort()
        facts: list[Fact] = []
        for *_rank, found in hits:
            facts.extend(f for f in found if not f.hidden and not _already_shown(f, facts))
        fired = [hit[2] for hit in hits]
        indicator = hits[0][3]
        variant = next(
            (
                v
                for v in self.route.data.get("variants", [])
                if (set(fired) <= set(v["when"]) if v.get("only") else set(v["when"]) & set(fired))
            ),
            None,
        )
        return RouteResult(
            self.route, facts, context, fired, indicator, variant, self._existing_referral()
        )

    def check(self, criterion_id: str) -> list[Fact]:
        """The criterion's facts (empty: it does not hold); memoised for this route."""
        found = self.results.get(criterion_id)
        if found is not None:
            return found
        self.results[criterion_id] = found = []  # guards against reference cycles
        if self.possible(criterion_id):
            unless = self.route.unless[criterion_id]
            if not (unless and any(map(self.check, unless))):
                criterion = self.by_id[criterion_id]
                found = _HANDLERS[criterion["type"]](self, criterion)
                if criterion["type"] not in ("all", "any"):  # never the bundle's order
                    found.sort(key=_fact_order)
                shown = criterion.get("evidence")
                if shown == "hidden":  # e.g. the cramps being new
                    found = [replace(fact, hidden=True) for fact in found]
                elif shown == "newest" and found:  # one example is enough (a risk factor)
                    found = [found[0]] + [replace(fact, hidden=True) for fact in found[1:]]
                self.results[criterion_id] = found
        return found

    def possible(self, criterion_id: str) -> bool:
        """False when the record lacks every code the criterion could hold on (see
        ``rules.Need``): most criteria of most routes are settled by this set lookup."""
        need = self.route.needs[criterion_id]
        if need.kind == "data":
            return not self.present.isdisjoint(need.data)
        if need.kind == "always":
            return True
        parts = map(self.possible, need.parts)
        return all(parts) if need.kind == "all" else any(parts)

    def _window_start(self, criterion: dict) -> datetime | None:
        window = self.route.windows[criterion["id"]]  # compiled at start-up
        return self.record.now - window if window is not None else None

    # --- criterion types ------------------------------------------------------------

    def _condition(self, criterion: dict) -> list[Fact]:
        """Coded problems (and, with ``also_observations``, findings recorded as
        Observations) whose onset or recorded date lies in the window.

        ``undated: recent``: an active problem with no usable date counts as recent (an
        acute DVT on a problem list often has none), and the card says so.
        """
        since = self._window_start(criterion)
        undated_counts = criterion.get("undated") == "recent"
        persisting = (
            self.record.now - timedelta(days=criterion["persisting_days"])
            if "persisting_days" in criterion
            else None
        )
        latest = self.record.now + timedelta(days=1)
        facts, seen = [], set()
        types = (
            ("Condition", "Observation") if criterion.get("also_observations") else ("Condition",)
        )
        for rtype in types:
            for name in criterion["value_sets"]:
                for resource, concept in self.record.find(rtype, self.route.value_sets[name]):
                    if id(resource) in seen or self.record.known_invalid(resource):
                        continue
                    if rtype == "Condition":
                        if not condition_counts(resource):
                            continue
                        dates = condition_dates(resource)
                    elif resource.get("status") in OBSERVATION_FINAL | {"preliminary"}:
                        dates = (observation_date(resource), None)
                    else:
                        continue
                    known = [d for d in dates if d is not None and d <= latest]
                    undated = not known
                    if persisting is not None and (undated or min(known) > persisting):
                        continue
                    if since is not None and (
                        undated and not undated_counts or known and max(known) < since
                    ):
                        continue
                    seen.add(id(resource))
                    facts.append(
                        condition_fact(
                            criterion["id"],
                            resource,
                            concept,
                            undated_counted=undated and since is not None,
                        )
                    )
        return _dedupe_by_text(facts)

    def _procedure(self, criterion: dict) -> list[Fact]:
        since = self._window_start(criterion)
        best: dict[str, tuple] = {}
        for name in criterion["value_sets"]:
            for resource, concept in self.record.find("Procedure", self.route.value_sets[name]):
                if resource.get("status") not in PROCEDURE_DONE:
                    continue
                when = procedure_date(resource)
                if when is None or (since is not None and when < since) or when > self.record.now:
                    continue
                current = best.get(concept.code)
                if current is None or when > current[0]:
                    if not self.record.known_invalid(resource):
                        best[concept.code] = (when, resource, concept)
        facts = []
        for when, resource, concept in sorted(best.values(), key=lambda t: t[0], reverse=True):
            facts.append(
                Fact(
                    criterion["id"],
                    f"{concept.display} ({concept.label}), performed {_day(when)}",
                    f"{concept.display.lower()} on {_day(when)}",
                    [resource],
                    when,
                )
            )
        return facts

    def _latest(
        self, concept: ObservationConcept, since: datetime | None, statuses: frozenset[str]
    ) -> tuple | None:
        """The newest result decides: (when, canonical value, resource, code), or None.

        When the newest result cannot be used (no unit, implausible ...), nothing is
        decided: an older result must not stand in for a newer one the service cannot read.
        """
        result = self.record.newest_result(concept, statuses, since)
        return result if result is not None and result[1] is not None else None

    def _deciding(
        self,
        concept: ObservationConcept,
        since: datetime | None,
        statuses: frozenset[str],
        aggregate: str | None,
    ) -> list[Found]:
        """The results a threshold is compared with.

        Normally the usable results of the newest instant (for a concept read in pairs such
        as the left and right ankle-brachial index, of the newest day); with ``aggregate``
        max/min, the most extreme usable result of the window (a fever between doses of an
        antipyretic). Total calcium is corrected for a low albumin when the concept says
        so. Shared by every criterion and route that asks the same question of the record.
        """
        key = ("deciding", concept.name, since, statuses, aggregate, self.record.invalid_count)
        found = self.record.memo.get(key)
        if found is None:
            found = self.record.memo[key] = self._deciding_now(concept, since, statuses, aggregate)
        return found

    def _deciding_now(
        self,
        concept: ObservationConcept,
        since: datetime | None,
        statuses: frozenset[str],
        aggregate: str | None,
    ) -> list[Found]:
        if aggregate:
            readable = [
                r for r in self.record.results_in(concept, statuses, since) if r[1] is not None
            ]
            pick = max if aggregate == "max" else min
            chosen = [pick(readable, key=lambda r: r[1])] if readable else []
        else:
            chosen = [
                r
                for r in self.record.newest_results(
                    concept, statuses, since, same_day=concept.paired_within == "day"
                )
                if r[1] is not None
            ]
        return [self._corrected(concept, Found(*r), statuses) for r in chosen]

    def _corrected(
        self, concept: ObservationConcept, found: Found, statuses: frozenset[str]
    ) -> Found:
        """Total calcium corrected for a low albumin of the same day or the day before."""
        correction = concept.correction
        if correction is None:
            return found
        albumin = self.ruleset.concepts[correction["albumin"]]
        day = found.when.date()
        for when, value, _resource, _code in self.record.results_in(
            albumin, statuses, found.when - timedelta(days=2)
        ):
            if value is None or not timedelta(0) <= day - when.date() <= timedelta(days=1):
                continue
            if value >= correction["applies_below"]:
                return found
            corrected = found.value + correction["factor"] * (correction["reference"] - value)
            note = (
                f"measured {concept.format(found.value)}, corrected for albumin "
                f"{albumin.format(value)} ({_day(when)})"
            )
            return Found(found.when, corrected, found.resource, found.code, derived=note)
        return found

    def _observation(self, criterion: dict) -> list[Fact]:
        ages = criterion.get("ages")
        if ages:  # e.g. the CDC childhood lead values below 18
            age = self.record.age_on(self.record.now)
            if "below" in ages and (age is None or age >= ages["below"]):
                return []
            if "from" in ages and age is not None and age < ages["from"]:
                return []
        concept = self.ruleset.concepts[criterion["concept"]]
        statuses = self.route.statuses[criterion["id"]]
        threshold = criterion["threshold"]
        limit = self.route.limits[criterion["id"]]  # converted once, at start-up
        since = self._window_start(criterion)
        newest = self._deciding(concept, since, statuses, criterion.get("aggregate"))
        if criterion.get("estimate") == "ckd-epi-2021":
            newest = self._with_estimate(criterion, statuses, newest)
        hits = [
            r
            for r in newest
            if _meets(r.value, _comparator_of(r.resource), threshold["comparator"], limit)
        ]
        if not hits:
            if not newest and criterion.get("critical_flags"):
                return self._flagged(criterion, concept, since, statuses)
            return []
        # Among same-instant results that meet the threshold, report the most extreme.
        latest = (min if threshold["comparator"] in {"<", "<="} else max)(
            hits, key=lambda r: r.value
        )
        earlier = None
        if criterion.get("sustained_days"):
            earlier = self._earlier_hit(criterion, concept, statuses, since, limit, latest)
            if earlier is None:
                return []
        shown = concept.format(latest.value)
        limit_text = (
            f"{threshold['comparator']} {format_number(threshold['value'], 2)} "
            f"{units.display_label(threshold['unit'])}"
        )
        day = _day(latest.when)
        if latest.estimated:
            text = (
                f"{concept.label} {shown} on {day}, **estimated** with CKD-EPI 2021 "
                f"from {latest.derived}"
            )
            short = f"estimated {concept.label} {shown} on {day}"
        elif latest.derived:
            text = f"{concept.label} {shown} on {day} ({latest.code.label}; {latest.derived})"
            short = f"{concept.label} {shown} (corrected) on {day}"
        else:
            reported = _as_reported(concept, latest.resource)
            text = f"{concept.label} {shown} on {day} ({latest.code.label}{reported})"
            short = f"{concept.label} {shown} on {day}"
        text += f"; threshold {limit_text}{latest.conflict}"
        sources = [latest.resource]
        if earlier is not None:
            when, value, resource, code = earlier
            text += (
                f"; also {concept.format(value)} on {_day(when)} ({code.label}), "
                f"{(latest.when - when).days} days earlier: **sustained**"
            )
            short = f"{short}, sustained"
            sources.append(resource)
        return [Fact(criterion["id"], text, short, sources, latest.when)]

    def _earlier_hit(
        self,
        criterion: dict,
        concept: ObservationConcept,
        statuses: frozenset[str],
        since: datetime | None,
        limit: float,
        latest: Found,
    ) -> tuple | None:
        """The newest usable result at least ``sustained_days`` before ``latest`` that also
        meets the threshold (KDIGO: a finding persisting more than 3 months)."""
        gap = timedelta(days=criterion["sustained_days"])
        comparator = criterion["threshold"]["comparator"]
        for result in self.record.results_in(concept, statuses, since):
            if result[0] <= latest.when - gap and result[1] is not None:
                if _meets(result[1], _comparator_of(result[2]), comparator, limit):
                    return result
                return None  # the earlier result was normal: not sustained
        return None

    def _flagged(
        self,
        criterion: dict,
        concept: ObservationConcept,
        since: datetime | None,
        statuses: frozenset[str],
    ) -> list[Fact]:
        """A newest result the laboratory flagged critical (LL, HH, AA) whose number cannot
        be read counts for an urgent criterion that accepts the flag (design.md)."""
        wanted = criterion["critical_flags"]
        for when, _value, resource, code in self.record.newest_results(concept, statuses, since):
            reading = self.record.reading(concept, resource)
            if reading.status == UNREADABLE and reading.flag in wanted:
                label = CRITICAL_FLAGS[reading.flag]
                return [
                    Fact(
                        criterion["id"],
                        f"{concept.label} flagged {label} ({reading.flag}) by the laboratory "
                        f"on {_day(when)} ({code.label}), with {reading.reason}: no number "
                        "to confirm it, treated as critical",
                        f"{concept.label} flagged {label} on {_day(when)}",
                        [resource],
                        when,
                    )
                ]
        return []

    def _with_estimate(
        self, criterion: dict, statuses: frozenset[str], reported: list[Found]
    ) -> list[Found]:
        """Reported eGFR and the CKD-EPI estimate from creatinine, decided for safety.

        The newer of the two decides; on the same day (within a day) they are compared, and
        when they differ by more than ``discordance_margin`` (relative to the estimate) the
        lower one is used and the card says both.
        """
        estimate = self._estimate_egfr(criterion, statuses)
        if estimate is None or not reported:
            return reported or ([estimate] if estimate else [])
        gap = estimate.when - reported[0].when
        if gap > timedelta(days=1):
            return [estimate]
        if gap < -timedelta(days=1):
            return reported
        lowest = min(reported, key=lambda r: r.value)
        margin = criterion.get("discordance_margin", 0.3)
        if abs(lowest.value - estimate.value) <= margin * estimate.value:
            return reported
        concept = self.ruleset.concepts[criterion["concept"]]
        if estimate.value < lowest.value:
            other = (
                f"reported {concept.label} {concept.format(lowest.value)} "
                f"({lowest.code.label}{_as_reported(concept, lowest.resource)})"
            )
            chosen = estimate
        else:
            other = (
                f"{concept.label} {concept.format(estimate.value)} estimated from "
                f"{estimate.derived}"
            )
            chosen = lowest
        conflict = (
            f". **Discordant**: the same-day {other} differs by more than "
            f"{round(margin * 100)} %; the lower value is used, check both"
        )
        return [
            Found(
                chosen.when,
                chosen.value,
                chosen.resource,
                chosen.code,
                chosen.derived,
                chosen.estimated,
                conflict,
            )
        ]

    def _estimate_egfr(self, criterion: dict, statuses: frozenset[str]) -> Found | None:
        creatinine = self.ruleset.concepts[criterion.get("estimate_from", "creatinine")]
        latest = self._latest(creatinine, self._window_start(criterion), statuses)
        if latest is None:
            return None
        when, value, resource, code = latest
        mg_dl = units.convert(value, creatinine.unit, "mg/dL", molar_mass=creatinine.molar_mass)
        age, sex = self.record.age_on(when), self.record.sex
        if mg_dl is None or mg_dl <= 0 or age is None or sex is None or age < 18:
            return None
        derived = f"creatinine {creatinine.format(value)} ({code.label}), age {int(age)}, {sex}"
        return Found(
            when, egfr.ckd_epi_2021(mg_dl, age, sex), resource, code, derived, estimated=True
        )

    def _observation_missing(self, criterion: dict) -> list[Fact]:
        """Each group of tests with no usable newest result in its window: a result that
        cannot be read or is implausible is listed for review, never counted as measured."""
        facts = []
        statuses = self.route.statuses[criterion["id"]]
        report = criterion.get("report", "both")  # missing, unusable (review) or both
        for group in criterion["groups"]:
            since = self.record.now - timedelta(days=group["lookback_days"])
            concepts = [self.ruleset.concepts[n] for n in group["concepts"]]
            newest = [
                (c, r) for c in concepts for r in self.record.newest_results(c, statuses, since)
            ]
            if any(r[1] is not None for _c, r in newest):
                continue
            if newest:
                if report != "missing":
                    facts.append(self._unusable_fact(criterion["id"], group, newest))
                continue
            if report == "unusable":
                continue
            last = max(
                (r for r in (self._latest(c, None, statuses) for c in concepts) if r),
                key=lambda r: r[0],
                default=None,
            )
            months = round(group["lookback_days"] / 30.4)
            if last is None:
                tail, brief = "none on record", "none on record"
            else:
                owner = next(c for c in concepts if c.value_set.match(last[3].system, last[3].code))
                tail = (
                    f"last: {owner.label} {owner.format(last[1])} on {_day(last[0])}, "
                    f"{last[3].label}"
                )
                brief = f"last {owner.format(last[1])} on {_day(last[0])}, {last[3].label}"
            label = re.sub(r" \(.*\)", "", group["label"])
            facts.append(
                Fact(
                    criterion["id"],
                    f"No {group['label']} result in the last {months} months ({tail})",
                    "no recent " + label,
                    [last[2]] if last else [],
                    None,
                    group.get("order"),
                    missing=f"{label} ({months} months; {brief})",
                )
            )
        return facts

    def _unusable_fact(self, criterion_id: str, group: dict, newest: list[tuple]) -> Fact:
        concept, (when, _value, resource, code) = max(newest, key=lambda cr: cr[1][0])
        reading = self.record.reading(concept, resource)
        recorded = _as_recorded(resource)
        if reading.status == IMPLAUSIBLE:
            text = (
                f"{concept.label} {recorded} on {_day(when)} ({code.label}) is implausible: "
                "check the result (not used by any rule)"
            )
        else:
            text = (
                f"{concept.label} result on {_day(when)} ({code.label}) cannot be read "
                f"({reading.reason}{': ' + recorded if recorded else ''}): review this result"
            )
        return Fact(
            criterion_id,
            text,
            f"review {concept.label.lower()} result",
            [resource],
            when,
            group.get("order"),
        )

    def _medication(self, criterion: dict) -> list[Fact]:
        wanted = criterion["classes"]
        since = None
        anchor = criterion.get("started_on_or_after")
        if anchor is not None:  # e.g. an anticoagulant ordered on or after the DVT
            dates = [f.when.date() for f in self.check(anchor) if f.when is not None]
            if not dates:
                return []
            since = min(dates)
        facts = []
        for resource, matches in self._active_medications():
            if self.record.known_invalid(resource):  # found out on an earlier attempt
                continue
            if since is not None:
                started = medication_date(resource)
                if started is None or started.date() < since:
                    continue
            for info, how in matches:
                if info["class"] in wanted:
                    facts.append(_medication_fact(criterion["id"], resource, info, how))
                    break
        return _dedupe_by_text(facts)  # repeated orders of one medicine: the newest

    def _active_medications(self) -> list[tuple[dict, list]]:
        """Active medication orders and statements with the cramp-drug classes they belong
        to; classified once per route (its criteria ask for different classes)."""
        if self._medications is None:
            self._medications = []
            for rtype in ("MedicationRequest", "MedicationStatement"):
                for resource in self.record.resources(rtype):
                    if resource.get("status") not in MEDICATION_ACTIVE:
                        continue
                    if rtype == "MedicationStatement" and resource.get("status") != "active":
                        continue
                    matches = self._medication_matches(resource, self.route.medications)
                    if matches:
                        self._medications.append((resource, matches))
        return self._medications

    def _medication_matches(self, resource: dict, value_set) -> list[tuple[dict, str]]:
        """Every cramp-drug class a medication belongs to, by RxNorm code first, then by name.

        Remembered per route by the medication's codes and names (charts repeat the same
        products call after call).
        """
        concept = resource.get("medicationCodeableConcept")
        medication = self.record.medication_of(resource)
        code = medication.get("code") if medication else None
        ingredients = medication.get("ingredient") if medication else None
        reference = resource.get("medicationReference")
        try:
            key = orjson.dumps((concept, code, ingredients, reference))
        except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits
            key = None
        if key is None or len(key) > MEDICATION_KEY_LIMIT:  # odd or huge: classify, not keep
            return self._classify(concept, code, ingredients, reference, value_set)
        memo = self.route.medication_memo
        matches = memo.get(key)
        if matches is None:
            if len(memo) >= MEDICATION_MEMO_LIMIT:
                memo.clear()
            matches = memo[key] = self._classify(concept, code, ingredients, reference, value_set)
        return matches

    def _classify(self, concept, code, ingredients, reference, value_set) -> list[tuple[dict, str]]:
        concepts = [concept, code]
        for ingredient in ingredients if isinstance(ingredients, list) else ():
            if isinstance(ingredient, dict):
                concepts.append(ingredient.get("itemCodeableConcept"))
        texts = (
            [reference["display"]]
            if isinstance(reference, dict) and isinstance(reference.get("display"), str)
            else []
        )
        matches, classes = [], set()
        for c in concepts:
            for system, code, display in codings_of(c):
                if value_set is not None and system == RXNORM:
                    for info in value_set.info.get((system, code), ()):
                        flag = "" if info["verified"] else ", code not verified"
                        matches.append((info, f"RxNorm {code}{flag}"))
                        classes.add(info["class"])
                if display:
                    texts.append(display)
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                texts.append(c["text"])
        names = self.route.medication_names
        for info, misspelt in names.infos_in(texts) if names is not None else ():
            if info["class"] not in classes:
                how = (
                    f"matched by a similar name only ('{misspelt[:30]}'), check it"
                    if misspelt
                    else "matched by name"
                )
                matches.append((info, how))
                classes.add(info["class"])
        return matches

    def _all(self, criterion: dict) -> list[Fact]:
        parts = [self.check(ref) for ref in criterion["of"]]
        if not all(parts):
            return []
        return [fact for part in parts for fact in part]

    def _any(self, criterion: dict) -> list[Fact]:
        return [fact for ref in criterion["of"] for fact in self.check(ref)]

    def _existing_referral(self) -> dict | None:
        """An open ServiceRequest for this route's referral, so no duplicate is offered."""
        if self.route.referral is None:
            return None
        for resource, _ in self.record.find("ServiceRequest", self.route.referral_set):
            if resource.get("status") in REFERRAL_OPEN:
                return resource
        return None


# The method evaluating each criterion type (the rule files' ``type``).
_HANDLERS = {
    kind: getattr(Evaluation, "_" + kind.replace("-", "_"))
    for kind in (
        "condition",
        "observation",
        "observation-missing",
        "procedure",
        "medication",
        "all",
        "any",
    )
}


def _fact_order(fact: Fact) -> tuple:
    """Newest evidence first, then by wording: the same chart gives the same card whatever
    the order of its resources."""
    return (-fact.when.timestamp() if fact.when else float("inf"), fact.text)


def _already_shown(fact: Fact, facts: list[Fact]) -> bool:
    """The same evidence reached through two criteria is listed once: the same line, or the
    same coded problem matched by two value sets (a CKD entry with SNOMED and ICD codes)."""
    for other in facts:
        if other.text == fact.text:
            return True
        if (
            len(fact.sources) == 1
            and other.sources == fact.sources
            and fact.sources[0].get("resourceType") == "Condition"
        ):
            return True
    return False


def _compare(value: float, comparator: str, limit: float) -> bool:
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}[
        comparator
    ]


def _comparator_of(resource: dict) -> str | None:
    quantity = resource.get("valueQuantity")
    comparator = quantity.get("comparator") if isinstance(quantity, dict) else None
    return comparator if comparator in {"<", "<=", ">", ">="} else None


def _meets(value: float, reported: str | None, comparator: str, limit: float) -> bool:
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


def _as_recorded(resource: dict) -> str:
    """The value as the laboratory sent it ("45 mmol/L", "<2.5 mmol/L"), for review lines."""
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        value = quantity.get("value")
        if isinstance(value, float):
            value = format_number(value, 3)
        parts = [quantity.get("comparator"), value, quantity.get("unit") or quantity.get("code")]
        shown = " ".join(str(p) for p in parts[1:] if p is not None and not isinstance(p, bool))
        prefix = parts[0] if isinstance(parts[0], str) else ""
        return (prefix + shown)[:40]
    text = resource.get("valueString")
    return f'"{text[:40]}"' if isinstance(text, str) else ""


def _as_reported(concept: ObservationConcept, resource: dict) -> str:
    """'; reported as 78 mmol/mol' when the lab used another unit than the one shown, and
    '; reported as 4.26 mL/min, used as mL/min/1.73m²' when a unit was read as another."""
    quantity = resource.get("valueQuantity") or {}
    raw = quantity.get("code") or quantity.get("unit")
    value = quantity.get("value")
    if raw in concept.unit_aliases and not isinstance(value, bool):
        return (
            f"; reported as {format_number(float(value), 2)} {raw}, used as "
            f"{units.display_label(concept.unit_aliases[raw])}"
        )
    unit = units.ucum_code(raw)
    if unit is None or unit == units.ucum_code(concept.display_unit) or isinstance(value, bool):
        return ""
    if units.display_label(unit) == units.display_label(concept.display_unit):
        return ""
    return f"; reported as {format_number(float(value), 2)} {units.display_label(unit)}"


def _dedupe_by_text(facts: list[Fact]) -> list[Fact]:
    """Keep one fact per coded problem (the newest), as problem lists repeat entries."""
    newest: dict[str, Fact] = {}
    for fact in facts:
        key = fact.short
        current = newest.get(key)
        if current is None or (fact.when and (current.when is None or fact.when > current.when)):
            newest[key] = fact
    return list(newest.values())


def _actual_code(resource: dict, concept: Concept) -> Concept:
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
    criterion_id: str, resource: dict, concept: Concept, undated_counted: bool = False
) -> Fact:
    """The evidence line for a coded problem: display, code, clinical status and dates as
    recorded (an onset is never inferred from the date the entry was recorded)."""
    concept = _actual_code(resource, concept)
    if resource.get("resourceType") == "Observation":
        when = observation_date(resource)
        return Fact(
            criterion_id,
            f"{concept.display} ({concept.label}), recorded as a finding on {_day(when)}",
            concept.display,
            [resource],
            when,
        )
    onset, recorded = condition_dates(resource)
    status = "active"
    for _s, code, _d in codings_of(resource.get("clinicalStatus")):
        status = code
    if onset and recorded and recorded.date() != onset.date():
        dates = f"onset {onset.date().isoformat()}, recorded {recorded.date().isoformat()}"
    elif onset:
        dates = f"onset {onset.date().isoformat()}"
    elif recorded:
        dates = f"recorded {recorded.date().isoformat()} (onset not recorded)"
    else:
        dates = "onset and recorded date not recorded"
    if undated_counted:
        dates += ": counted as recent, check when it began"
    return Fact(
        criterion_id,
        f"{concept.display} ({concept.label}), {status}, {dates}",
        concept.display,
        [resource],
        onset or recorded,
    )


def _medication_fact(criterion_id: str, resource: dict, info: dict, how: str) -> Fact:
    """One line per medicine: name as ordered, class, status, date, how it was matched and
    the strength of its link with cramps (the class's `evidence`)."""
    name = None
    for _s, _c, display in codings_of(resource.get("medicationCodeableConcept")):
        name = name or display
    concept = resource.get("medicationCodeableConcept")
    name = (
        name or (concept.get("text") if isinstance(concept, dict) else None) or info["ingredient"]
    )
    started = medication_date(resource)
    since = f"ordered {started.date().isoformat()}" if started else "order date not recorded"
    evidence = f"; link with cramps: {info['evidence']}" if info.get("evidence") else ""
    ingredient = "" if info["ingredient"].lower() in name.lower() else f" ({info['ingredient']})"
    return Fact(
        criterion_id,
        f"{name[:60]}: {info['class_label']}{ingredient}, {resource.get('status')}, "
        f"{since} ({how}{evidence})",
        info["ingredient"],
        [resource],
        started,
    )
