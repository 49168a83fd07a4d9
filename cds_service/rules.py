"""Load the declarative rules in ``cards/`` and evaluate them against a patient record.

A route file lists criteria; a criterion that holds yields facts (the evidence, with
value, unit, date and code). A route fires when any of its firing criteria holds. All
clinical content (codes, thresholds, windows, wording) is in the files; this module
only knows the criterion types.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from cds_service import egfr, units
from cds_service.record import (MEDICATION_ACTIVE, OBSERVATION_FINAL, PROCEDURE_DONE, Record,
                                condition_counts, condition_date, medication_date,
                                observation_date, procedure_date, reference_to)
from cds_service.terminology import ICD10CM, RXNORM, Concept, ValueSet, canonical_system, codings_of

log = logging.getLogger(__name__)

INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
COMMON_FILE = "common.yaml"


class RuleError(ValueError):
    """A rule file is wrong; the message names the file and the field."""


@dataclass
class Fact:
    """One piece of evidence behind a card."""

    criterion: str
    text: str            # full line for the card detail
    short: str           # few words for the summary
    references: list[str] = field(default_factory=list)
    when: datetime | None = None
    order: str | None = None  # lab order to suggest when the fact is a missing result


@dataclass
class ObservationConcept:
    name: str
    label: str
    unit: str
    display_unit: str
    value_set: ValueSet
    molar_mass: float | None = None
    valence: int | None = None
    scale: str | None = None
    unit_aliases: dict = field(default_factory=dict)
    decimals: int = 1

    def value_in(self, quantity: object, target: str | None = None) -> float | None:
        """The quantity's value in ``target`` (default: canonical unit), or None."""
        if not isinstance(quantity, dict):
            return None
        value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        unit = quantity.get("code") if quantity.get("code") else quantity.get("unit")
        unit = self.unit_aliases.get(unit, unit)
        return units.convert(value, unit, target or self.unit, molar_mass=self.molar_mass,
                             valence=self.valence, scale=self.scale)

    def format(self, canonical_value: float) -> str:
        shown = units.convert(canonical_value, self.unit, self.display_unit,
                              molar_mass=self.molar_mass, valence=self.valence, scale=self.scale)
        # A dimensionless ratio (ABI) has no unit label: no trailing space.
        return f"{_number(shown, self.decimals)} {units.display_label(self.display_unit)}".rstrip()


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _day(when: datetime | None) -> str:
    return when.date().isoformat() if when else "date not recorded"


# --------------------------------------------------------------------------- loading

def _schema(name: str) -> dict:
    return json.loads(resources.files("cds_service.schemas").joinpath(name).read_text())


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path.name}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise RuleError(f"{path.name}: must be a mapping at the top level")
    return data


def _validate(path: Path, data: dict, schema: dict) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RuleError(f"{path.name}: field {where}: {err.message}")


@dataclass
class Route:
    code: str
    title: str
    indicator: str
    order: int
    data: dict
    criteria: list[dict]
    value_sets: dict[str, ValueSet]
    referral: Concept | None
    medications: ValueSet | None
    medication_names: list[tuple[re.Pattern, dict]]
    source_file: str


class RuleSet:
    """Every route, compiled once at start-up."""

    def __init__(self, common: dict, routes: list[Route], concepts: dict[str, ObservationConcept]):
        self.common = common
        self.routes = sorted(routes, key=lambda r: r.order)
        self.concepts = concepts
        self.gate = ValueSet.from_entries("gate", common["gate"]["value_set"])

    @classmethod
    def load(cls, cards_dir: Path) -> "RuleSet":
        cards_dir = Path(cards_dir)
        if not (cards_dir / COMMON_FILE).is_file():
            raise RuleError(f"{COMMON_FILE}: missing from {cards_dir}")
        common_path = cards_dir / COMMON_FILE
        common = _read(common_path)
        _validate(common_path, common, _schema("rules-common.json"))
        concepts = {name: _concept(name, spec, common_path)
                    for name, spec in common["observations"].items()}
        routes = []
        seen = {}
        for path in sorted(cards_dir.glob("*.yaml")):
            if path.name == COMMON_FILE:
                continue
            data = _read(path)
            _validate(path, data, _schema("rules-route.json"))
            if data["route"] in seen:
                raise RuleError(f"{path.name}: field route: '{data['route']}' is already "
                                f"defined in {seen[data['route']]}")
            seen[data["route"]] = path.name
            routes.append(_compile_route(path, data, concepts))
        if not routes:
            raise RuleError(f"no route files (*.yaml) in {cards_dir}")
        return cls(common, routes, concepts)

    @property
    def observation_codes(self) -> list[Concept]:
        """Every observation code a rule reads, for the prefetch template."""
        seen = {}
        for concept in self.concepts.values():
            for member in concept.value_set.exact.values():
                seen[(member.system, member.code)] = member
        return list(seen.values())

    def gate_facts(self, record: Record) -> list[Fact]:
        """The active leg-cramp problems; no cards without one."""
        facts = []
        for resource, concept in record.find("Condition", self.gate):
            if condition_counts(resource) and record.is_valid(resource):
                facts.append(_condition_fact("gate", resource, concept))
        return facts

    def evaluate(self, record: Record) -> list["RouteResult"]:
        if not self.gate_facts(record):
            return []
        results = []
        for route in self.routes:
            result = Evaluation(self, route, record).run()
            if result is not None:
                results.append(result)
        results.sort(key=lambda r: (-INDICATOR_RANK[r.indicator], r.route.order))
        return results


def _concept(name: str, spec: dict, path: Path) -> ObservationConcept:
    concept = ObservationConcept(
        name=name, label=spec["label"], unit=spec["unit"],
        display_unit=spec.get("display_unit", spec["unit"]),
        value_set=ValueSet.from_entries(name, spec["codes"]),
        molar_mass=spec.get("molar_mass"), valence=spec.get("valence"), scale=spec.get("scale"),
        unit_aliases=spec.get("unit_aliases", {}), decimals=spec.get("decimals", 1))
    for unit in (concept.unit, concept.display_unit, *concept.unit_aliases.values()):
        if units.ucum_code(unit) is None:
            raise RuleError(f"{path.name}: field observations/{name}: unknown UCUM unit {unit!r}")
    if units.convert(1.0, concept.display_unit, concept.unit, molar_mass=concept.molar_mass,
                     valence=concept.valence, scale=concept.scale) is None:
        raise RuleError(f"{path.name}: field observations/{name}: display_unit "
                        f"{concept.display_unit!r} cannot be converted to {concept.unit!r}")
    return concept


def _compile_route(path: Path, data: dict, concepts: dict) -> Route:
    value_sets = {name: ValueSet.from_entries(name, entries)
                  for name, entries in data.get("value_sets", {}).items()}
    ids = set()
    for i, criterion in enumerate(data["criteria"]):
        where = f"{path.name}: field criteria/{i}"
        if criterion["id"] in ids:
            raise RuleError(f"{where}/id: duplicate id {criterion['id']!r}")
        ids.add(criterion["id"])
        for name in criterion.get("value_sets", []):
            if name not in value_sets:
                raise RuleError(f"{where}/value_sets: unknown value set {name!r}")
        for name in _concept_names(criterion):
            if name not in concepts:
                raise RuleError(f"{where}: unknown observation concept {name!r}")
        for name in criterion.get("classes", []):
            if name not in {c["class"] for c in data.get("medications", [])}:
                raise RuleError(f"{where}/classes: unknown medication class {name!r}")
        for group in criterion.get("groups", []):
            if "order" in group and group["order"] not in data.get("orders", {}):
                raise RuleError(f"{where}/groups: unknown order {group['order']!r}")
        if "threshold" in criterion:
            concept = concepts[criterion["concept"]]
            unit = criterion["threshold"]["unit"]
            if units.convert(1.0, unit, concept.unit, molar_mass=concept.molar_mass,
                             valence=concept.valence, scale=concept.scale) is None:
                raise RuleError(f"{where}/threshold/unit: {unit!r} cannot be converted to "
                                f"{concept.unit!r}")
    for i, criterion in enumerate(data["criteria"]):
        for ref in criterion.get("of", []) + criterion.get("unless", []):
            if ref not in ids:
                raise RuleError(f"{path.name}: field criteria/{i}: unknown criterion {ref!r}")
    for i, variant in enumerate(data.get("variants", [])):
        for ref in variant["when"]:
            if ref not in ids:
                raise RuleError(f"{path.name}: field variants/{i}/when: unknown criterion {ref!r}")
    referral = None
    if "referral" in data:
        code = data["referral"]["code"]
        referral = Concept(canonical_system(code["system"]), str(code["code"]), code["display"])
    medications, names = _compile_medications(data.get("medications", []))
    return Route(code=data["route"], title=data["title"], indicator=data["indicator"],
                 order=data.get("order", 100), data=data, criteria=data["criteria"],
                 value_sets=value_sets, referral=referral, medications=medications,
                 medication_names=names, source_file=path.name)


def _concept_names(criterion: dict) -> list[str]:
    names = [criterion["concept"]] if "concept" in criterion else []
    for group in criterion.get("groups", []):
        names.extend(group["concepts"])
    return names


def _compile_medications(classes: list[dict]):
    """RxNorm ingredient and product codes -> (ingredient, class), and name patterns."""
    entries, names = [], []
    for drug_class in classes:
        for ingredient in drug_class["ingredients"]:
            info = {"class": drug_class["class"], "class_label": drug_class["label"],
                    "ingredient": ingredient["display"], "note": drug_class.get("note")}
            codes = [{"code": ingredient["code"], "display": ingredient["display"]}]
            codes += ingredient.get("products", [])
            for code in codes:
                entries.append({"system": "rxnorm", "code": code["code"],
                                "display": code["display"], "info": info})
            # Whole-word match that also works for names ending in punctuation, such as
            # "estrogens, conjugated (USP)" (a plain \b after ")" never matches).
            for name in [ingredient["display"], *ingredient.get("names", [])]:
                pattern = re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)", re.IGNORECASE)
                names.append((pattern, info))
    if not entries:
        return None, []
    value_set = ValueSet.from_entries("medications", entries)
    # A multi-ingredient product (e.g. hydrochlorothiazide/triamterene) belongs to every
    # class of its ingredients, so each code maps to a list of (ingredient, class) entries.
    value_set.info = {}
    for e in entries:
        bucket = value_set.info.setdefault((RXNORM, str(e["code"])), [])
        if e["info"] not in bucket:
            bucket.append(e["info"])
    return value_set, names


# --------------------------------------------------------------------------- evaluation

@dataclass
class RouteResult:
    route: Route
    facts: list[Fact]
    context: list[Fact]
    fired: list[str]
    indicator: str
    variant: dict | None
    existing_referral: dict | None


class Evaluation:
    """Evaluates one route for one record; criteria results are memoised by id."""

    def __init__(self, ruleset: RuleSet, route: Route, record: Record):
        self.ruleset = ruleset
        self.route = route
        self.record = record
        self.by_id = {c["id"]: c for c in route.criteria}
        self.results: dict[str, list[Fact]] = {}

    def run(self) -> RouteResult | None:
        facts, fired, context = [], [], []
        indicator = None
        for criterion in self.route.criteria:
            found = self.check(criterion["id"])
            if not found:
                continue
            if criterion.get("context"):
                context.extend(found)
                continue
            if not criterion.get("fires", True):
                continue
            fired.append(criterion["id"])
            facts.extend(f for f in found if f not in facts)
            level = criterion.get("indicator", self.route.indicator)
            if indicator is None or INDICATOR_RANK[level] > INDICATOR_RANK[indicator]:
                indicator = level
        if not fired:
            return None
        variant = next((v for v in self.route.data.get("variants", [])
                        if set(v["when"]) & set(fired)), None)
        return RouteResult(self.route, facts, context, fired, indicator, variant,
                           self._existing_referral())

    def check(self, criterion_id: str) -> list[Fact]:
        if criterion_id not in self.results:
            self.results[criterion_id] = []  # guards against reference cycles
            criterion = self.by_id[criterion_id]
            if any(self.check(ref) for ref in criterion.get("unless", [])):
                found = []
            else:
                found = getattr(self, "_" + criterion["type"].replace("-", "_"))(criterion)
            self.results[criterion_id] = found
        return self.results[criterion_id]

    def _window_start(self, criterion: dict, key: str = "lookback_days") -> datetime | None:
        days = criterion.get(key)
        return self.record.now - timedelta(days=days) if days is not None else None

    # --- criterion types ------------------------------------------------------------

    def _condition(self, criterion: dict) -> list[Fact]:
        since = self._window_start(criterion, "recent_days")
        facts, seen = [], set()
        for name in criterion["value_sets"]:
            for resource, concept in self.record.find("Condition", self.route.value_sets[name]):
                if id(resource) in seen or not condition_counts(resource):
                    continue
                started = condition_date(resource)
                if since is not None and (started is None or started < since or started > self.record.now + timedelta(days=1)):
                    continue
                if not self.record.is_valid(resource):
                    continue
                seen.add(id(resource))
                facts.append(_condition_fact(criterion["id"], resource, concept))
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
                    if self.record.is_valid(resource):
                        best[concept.code] = (when, resource, concept)
        facts = []
        for when, resource, concept in sorted(best.values(), key=lambda t: t[0], reverse=True):
            facts.append(Fact(criterion["id"],
                              f"{concept.display} ({concept.label}), performed {_day(when)}",
                              f"{concept.display.lower()} on {_day(when)}",
                              _refs(resource), when))
        return facts

    def _latest(self, concept: ObservationConcept, since: datetime | None,
                statuses: set[str]) -> tuple | None:
        """Newest usable result of a concept: (when, canonical value, resource, code)."""
        candidates = []
        for resource, code in self.record.find("Observation", concept.value_set):
            if resource.get("status") not in statuses:
                continue
            when = observation_date(resource)
            if when is None or when > self.record.now + timedelta(days=1):
                continue
            if since is not None and when < since:
                continue
            candidates.append((when, resource, code))
        candidates.sort(key=lambda c: c[0], reverse=True)
        for when, resource, code in candidates:
            value = concept.value_in(resource.get("valueQuantity"))
            if value is None:
                log.info("ignored a %s result whose value or unit cannot be used", concept.name)
                continue
            if self.record.is_valid(resource):
                return when, value, resource, code
        return None

    def _latest_all(self, concept: ObservationConcept, since: datetime | None,
                    statuses: set[str]) -> list[tuple]:
        """The newest usable result and any others taken at the very same instant.

        Paired measurements (the right and left ankle-brachial index of one session) share
        one effective time; the criterion must see both, not whichever came first.
        """
        latest = self._latest(concept, since, statuses)
        if latest is None:
            return []
        same = [latest]
        for resource, code in self.record.find("Observation", concept.value_set):
            if resource is latest[2] or resource.get("status") not in statuses:
                continue
            if observation_date(resource) != latest[0]:
                continue
            value = concept.value_in(resource.get("valueQuantity"))
            if value is not None and self.record.is_valid(resource):
                same.append((latest[0], value, resource, code))
        return same

    def _observation(self, criterion: dict) -> list[Fact]:
        concept = self.ruleset.concepts[criterion["concept"]]
        statuses = set(criterion.get("statuses", OBSERVATION_FINAL))
        threshold = criterion["threshold"]
        limit = units.convert(threshold["value"], threshold["unit"], concept.unit,
                              molar_mass=concept.molar_mass, valence=concept.valence,
                              scale=concept.scale)
        newest = self._latest_all(concept, self._window_start(criterion), statuses)
        estimated = False
        if not newest and criterion.get("estimate") == "ckd-epi-2021":
            latest = self._estimate_egfr(criterion, statuses)
            estimated = latest is not None
            newest = [latest] if latest else []
        hits = [r for r in newest if _compare(r[1], threshold["comparator"], limit)]
        if not hits:
            return []
        # Among same-instant results that meet the threshold, report the most extreme.
        latest = (min if threshold["comparator"] in {"<", "<="} else max)(hits, key=lambda r: r[1])
        when, value, resource, code = latest
        shown = concept.format(value)
        limit_text = f"{threshold['comparator']} {_number(threshold['value'], 2)} " \
                     f"{units.display_label(threshold['unit'])}"
        if estimated:
            text = (f"{concept.label} {shown} on {_day(when)}, **estimated** with CKD-EPI 2021 "
                    f"from serum creatinine ({code.label}); threshold {limit_text}")
            short = f"estimated {concept.label} {shown} on {_day(when)}"
        else:
            text = f"{concept.label} {shown} on {_day(when)} ({code.label}); threshold {limit_text}"
            short = f"{concept.label} {shown} on {_day(when)}"
        return [Fact(criterion["id"], text, short, _refs(resource), when)]

    def _estimate_egfr(self, criterion: dict, statuses: set[str]) -> tuple | None:
        creatinine = self.ruleset.concepts[criterion.get("estimate_from", "creatinine")]
        latest = self._latest(creatinine, self._window_start(criterion), statuses)
        if latest is None:
            return None
        when, value, resource, code = latest
        mg_dl = units.convert(value, creatinine.unit, "mg/dL", molar_mass=creatinine.molar_mass)
        age, sex = self.record.age_on(when), self.record.sex
        if mg_dl is None or age is None or sex is None or age < 18:
            return None
        return when, egfr.ckd_epi_2021(mg_dl, age, sex), resource, code

    def _observation_missing(self, criterion: dict) -> list[Fact]:
        facts = []
        statuses = set(criterion.get("statuses", OBSERVATION_FINAL))
        for group in criterion["groups"]:
            since = self._window_start(group)
            concepts = [self.ruleset.concepts[n] for n in group["concepts"]]
            if any(self._latest(c, since, statuses) for c in concepts):
                continue
            last = max((r for r in (self._latest(c, None, statuses) for c in concepts) if r),
                       key=lambda r: r[0], default=None)
            months = round(group["lookback_days"] / 30.4)
            if last is None:
                tail = "none on record"
            else:
                owner = next(c for c in concepts if c.value_set.match(last[3].system, last[3].code))
                tail = (f"last: {owner.label} {owner.format(last[1])} on {_day(last[0])}, "
                        f"{last[3].label}")
            facts.append(Fact(criterion["id"],
                              f"No {group['label']} result in the last {months} months ({tail})",
                              group["label"], _refs(last[2]) if last else [], None,
                              group.get("order")))
        return facts

    def _medication(self, criterion: dict) -> list[Fact]:
        wanted = set(criterion["classes"])
        value_set = self.route.medications
        facts, seen = [], set()
        for rtype in ("MedicationRequest", "MedicationStatement"):
            for resource in self.record.by_type.get(rtype, ()):
                if resource.get("status") not in MEDICATION_ACTIVE | {"active"}:
                    continue
                if rtype == "MedicationStatement" and resource.get("status") != "active":
                    continue
                info, how = self._medication_info(resource, value_set, wanted)
                if info is None or id(resource) in seen or not self.record.is_valid(resource):
                    continue
                seen.add(id(resource))
                facts.append(_medication_fact(criterion["id"], resource, info, how))
        return facts

    def _medication_info(self, resource: dict, value_set, wanted: set[str]):
        concept = resource.get("medicationCodeableConcept")
        medication = self.record.medication_of(resource)
        concepts = [concept] + ([medication.get("code")] if medication else [])
        for ingredient in (medication or {}).get("ingredient") or []:
            if isinstance(ingredient, dict):
                concepts.append(ingredient.get("itemCodeableConcept"))
        texts = []
        for c in concepts:
            for system, code, display in codings_of(c):
                if value_set is not None and system == RXNORM:
                    for info in value_set.info.get((system, code), ()):
                        if info["class"] in wanted:
                            return info, f"RxNorm {code}"
                if display:
                    texts.append(display)
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                texts.append(c["text"])
        for pattern, info in self.route.medication_names:
            if info["class"] in wanted and any(pattern.search(t) for t in texts):
                return info, "matched by name only (no known RxNorm code)"
        return None, None

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
        target = ValueSet("referral", [self.route.referral], [])
        for resource, _ in self.record.find("ServiceRequest", target):
            if resource.get("status") in {"active", "on-hold"}:
                return resource
        return None


def _compare(value: float, comparator: str, limit: float) -> bool:
    return {"<": value < limit, "<=": value <= limit, ">": value > limit,
            ">=": value >= limit}[comparator]


def _refs(resource: dict) -> list[str]:
    ref = reference_to(resource)
    return [ref] if ref else []


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
        if (system == ICD10CM == concept.system and code != concept.code
                and code.startswith(concept.code)):
            return Concept(system, code, display or concept.display)
    return concept


def _condition_fact(criterion_id: str, resource: dict, concept: Concept) -> Fact:
    concept = _actual_code(resource, concept)
    started = condition_date(resource)
    status = "active"
    for _s, code, _d in codings_of(resource.get("clinicalStatus")):
        status = code
    since = f"onset {started.date().isoformat()}" if started else "onset not recorded"
    return Fact(criterion_id, f"{concept.display} ({concept.label}), {status}, {since}",
                concept.display, _refs(resource), started)


def _medication_fact(criterion_id: str, resource: dict, info: dict, how: str) -> Fact:
    name = None
    for _s, _c, display in codings_of(resource.get("medicationCodeableConcept")):
        name = name or display
    concept = resource.get("medicationCodeableConcept")
    name = name or (concept.get("text") if isinstance(concept, dict) else None) or info["ingredient"]
    started = medication_date(resource)
    since = f"ordered {started.date().isoformat()}" if started else "order date not recorded"
    note = f" {info['note']}" if info.get("note") else ""
    return Fact(criterion_id,
                f"{name}: {info['class_label']} ({info['ingredient']}; {how}), "
                f"{resource.get('status')}, {since}.{note}",
                info["ingredient"], _refs(resource), started)
