"""Load the declarative rules in ``cards/``, check them, and run them for a patient.

``common.yaml`` holds the leg-cramp gate and the lab concepts; one file per route holds
its criteria and card wording. Files are validated against the JSON Schemas in
``schemas/`` and cross-checked (value sets, concepts, units) so a bad file stops the
service with a message naming the file and field. ``criteria.py`` evaluates them.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema
import jsonschema_rs
import yaml

from cds_service import units
from cds_service.criteria import (
    INDICATOR_RANK,
    Evaluation,
    Fact,
    RouteResult,
    condition_fact,
    format_number,
)
from cds_service.record import OBSERVATION_FINAL, Record, condition_counts
from cds_service.terminology import RXNORM, CodeIndex, Concept, ValueSet, canonical_system

log = logging.getLogger(__name__)

COMMON_FILE = "common.yaml"
SHARED_DIR = "valuesets"  # cards/valuesets/*.yaml: definitions every route may use
GATE_VALUE_SET = "leg-cramps"  # the gate's codes, for routes that ask how new the cramps are


class RuleError(ValueError):
    """A rule file is wrong; the message names the file and the field."""


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
    paired_within: str | None = None  # "day": same-day results are read together (ABI legs)
    unitless: bool = False  # a ratio may come without any unit
    plausible: tuple[float, float] | None = None  # in ``unit``; outside it a result is not used
    correction: dict | None = None  # albumin correction of total calcium (see common.yaml)

    def value_in(self, quantity: object, target: str | None = None) -> float | None:
        """The quantity's value in ``target`` (default: canonical unit), or None."""
        if not isinstance(quantity, dict):
            return None
        value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        unit = quantity.get("code") if quantity.get("code") else quantity.get("unit")
        if unit is None and self.unitless:
            unit = self.unit
        unit = self.unit_aliases.get(unit, unit)
        return units.convert(
            value,
            unit,
            target or self.unit,
            molar_mass=self.molar_mass,
            valence=self.valence,
            scale=self.scale,
        )

    def format(self, canonical_value: float) -> str:
        shown = units.convert(
            canonical_value,
            self.unit,
            self.display_unit,
            molar_mass=self.molar_mass,
            valence=self.valence,
            scale=self.scale,
        )
        # A dimensionless ratio (ABI) has no unit label: no trailing space.
        label = units.display_label(self.display_unit)
        return f"{format_number(shown, self.decimals)} {label}".rstrip()


# --------------------------------------------------------------------------- loading


def _schema(name: str) -> dict:
    return json.loads(resources.files("cds_service.schemas").joinpath(name).read_text())


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> dict:
    try:
        # libyaml's parser (PyYAML's wheels carry it): the pure-Python one takes over a second
        # for the rule files, most of the service's start-up.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path.name}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise RuleError(f"{path.name}: must be a mapping at the top level")
    return data


def _validate(path: Path, data: dict, schema: dict) -> None:
    # jsonschema-rs answers yes or no in milliseconds; jsonschema, ten times slower, is only
    # asked for the message when a file is wrong (its messages name the field).
    if jsonschema_rs.validator_for(schema).is_valid(data):
        return
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
    medication_names: NameMatcher | None
    source_file: str

    limits: dict[str, float] = field(default_factory=dict)  # thresholds in concept units
    by_id: dict[str, dict] = field(default_factory=dict)  # criteria by id
    referral_set: ValueSet | None = None  # to find an open referral

    needs: dict[str, Need] = field(default_factory=dict)  # what each criterion needs to hold
    windows: dict[str, timedelta | None] = field(default_factory=dict)  # look-back, by id
    statuses: dict[str, frozenset[str]] = field(default_factory=dict)  # result statuses, by id
    medication_memo: dict[bytes, list] = field(default_factory=dict)  # see criteria
    shown: list[dict] = field(default_factory=list)  # criteria that fire or give context
    unless: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by id
    content_of: dict[str, str] = field(default_factory=dict)  # criterion id -> content name

    def __post_init__(self):
        self.by_id = {c["id"]: c for c in self.criteria}
        self.unless = {c["id"]: tuple(c.get("unless", ())) for c in self.criteria}
        for c in self.criteria:
            days = c.get("recent_days" if c["type"] == "condition" else "lookback_days")
            self.windows[c["id"]] = timedelta(days=days) if days is not None else None
            self.statuses[c["id"]] = frozenset(c.get("statuses", OBSERVATION_FINAL))
        self.shown = [c for c in self.criteria if c.get("fires", True) or c.get("context")]
        if self.referral is not None:
            self.referral_set = ValueSet("referral", [self.referral], [])


@dataclass(frozen=True)
class Need:
    """What a record must hold for a criterion to possibly hold, decided before running it.

    ``data``: at least one of these (resource type, value set) pairs is in
    ``Record.present()`` (value set None: any resource of the type was received);
    ``all``/``any``: of the criteria in ``parts``;
    ``always``: cannot be ruled out up front (a missing result holds on an empty record).
    """

    kind: str
    data: frozenset = frozenset()
    parts: tuple = ()


def _needs(route_file: str, criteria: list[dict], value_sets: dict, concepts: dict) -> dict:
    """Each criterion's Need; a cycle of ``of`` references is a rule file error."""
    by_id = {c["id"]: c for c in criteria}
    needs: dict[str, Need] = {}

    def need(criterion_id: str, path: tuple) -> Need:
        if criterion_id in path:
            raise RuleError(
                f"{route_file}: criteria {' -> '.join(path + (criterion_id,))} form a cycle"
            )
        if criterion_id not in needs:
            criterion = by_id[criterion_id]
            kind = criterion["type"]
            if kind in ("all", "any"):
                for part in criterion["of"]:
                    need(part, path + (criterion_id,))
                needs[criterion_id] = Need(kind, parts=tuple(criterion["of"]))
            elif kind in ("condition", "procedure"):
                rtypes = [kind.capitalize()] + (
                    ["Observation"] if criterion.get("also_observations") else []
                )
                needs[criterion_id] = Need(
                    "data",
                    frozenset(
                        (rtype, value_sets[name])
                        for rtype in rtypes
                        for name in criterion["value_sets"]
                    ),
                )
            elif kind == "observation":
                names = _concept_names(criterion)  # with creatinine when eGFR may be estimated
                needs[criterion_id] = Need(
                    "data", frozenset(("Observation", concepts[name].value_set) for name in names)
                )
            elif kind == "medication":
                needs[criterion_id] = Need(
                    "data", frozenset({("MedicationRequest", None), ("MedicationStatement", None)})
                )
            else:  # observation-missing
                needs[criterion_id] = Need("always")
        return needs[criterion_id]

    for criterion in criteria:
        need(criterion["id"], ())
    return needs


class RuleSet:
    """Every route, compiled once at start-up."""

    def __init__(self, common: dict, routes: list[Route], concepts: dict[str, ObservationConcept]):
        self.common = common
        self.routes = sorted(routes, key=lambda r: r.order)
        self.concepts = concepts
        self.gate = ValueSet.from_entries("gate", common["gate"]["value_set"])
        self.override_reasons = [
            {
                "system": canonical_system(r["system"]),
                "code": str(r["code"]),
                "display": r["display"],
            }
            for r in common["override_reasons"]
        ]
        self.codes = CodeIndex(
            [self.gate]
            + [c.value_set for c in self.concepts.values()]
            + [vs for route in self.routes for vs in route.value_sets.values()]
            + [r.referral_set for r in self.routes if r.referral_set]
        )

    @classmethod
    def load(cls, cards_dir: Path) -> RuleSet:
        cards_dir = Path(cards_dir)
        if not (cards_dir / COMMON_FILE).is_file():
            raise RuleError(f"{COMMON_FILE}: missing from {cards_dir}")
        common_path = cards_dir / COMMON_FILE
        common = _read(common_path)
        _validate(common_path, common, _schema("rules-common.json"))
        concepts = {
            name: _concept(name, spec, common_path) for name, spec in common["observations"].items()
        }
        shared, shared_sets = _shared_definitions(cards_dir)
        gate = {GATE_VALUE_SET: common["gate"]["value_set"], **shared_sets}
        routes = []
        seen = {}
        for path in sorted(cards_dir.glob("*.yaml")):
            if path.name == COMMON_FILE:
                continue
            data = _read(path)
            _validate(path, data, _schema("rules-route.json"))
            if data["route"] in seen:
                raise RuleError(
                    f"{path.name}: field route: '{data['route']}' is already "
                    f"defined in {seen[data['route']]}"
                )
            seen[data["route"]] = path.name
            routes.append(_compile_route(path, data, concepts, shared, gate))
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
                facts.append(condition_fact("gate", resource, concept))
        return facts

    def evaluate(self, record: Record) -> list[RouteResult]:
        if not self.gate_facts(record):
            return []
        if record.deceased:
            log.info("no cards: the patient is recorded as deceased")
            return []
        results = []
        strict: Record | None = None
        for route in self.routes:
            try:
                result = Evaluation(self, route, record).run()
            except Exception as exc:  # malformed data the screening let through, or a defect
                log.warning(
                    "route %s failed (%s); evaluated again with every resource validated",
                    route.code,
                    type(exc).__name__,
                )
                strict = strict or record.strict_copy()
                try:
                    result = Evaluation(self, route, strict).run()
                except Exception as again:  # a defect must cost one route, not every card
                    log.error(
                        "route %s failed (%s); its card is left out",
                        route.code,
                        type(again).__name__,
                    )
                    continue
            if result is not None:
                results.append(result)
        results.sort(key=lambda r: (-INDICATOR_RANK[r.indicator], r.route.order))
        return results


def _concept(name: str, spec: dict, path: Path) -> ObservationConcept:
    concept = ObservationConcept(
        name=name,
        label=spec["label"],
        unit=spec["unit"],
        display_unit=spec.get("display_unit", spec["unit"]),
        value_set=ValueSet.from_entries(name, spec["codes"]),
        molar_mass=spec.get("molar_mass"),
        valence=spec.get("valence"),
        scale=spec.get("scale"),
        unit_aliases=spec.get("unit_aliases", {}),
        decimals=spec.get("decimals", 1),
        paired_within=spec.get("paired_within"),
        unitless=spec.get("unitless", False),
        correction=spec.get("albumin_correction"),
    )
    plausible = spec["plausible"]
    bounds = [
        units.convert(
            plausible[end],
            plausible["unit"],
            concept.unit,
            molar_mass=concept.molar_mass,
            valence=concept.valence,
            scale=concept.scale,
        )
        for end in ("low", "high")
    ]
    if None in bounds:
        raise RuleError(
            f"{path.name}: field observations/{name}/plausible/unit: "
            f"{plausible['unit']!r} cannot be converted to {concept.unit!r}"
        )
    concept.plausible = (bounds[0], bounds[1])
    for unit in (concept.unit, concept.display_unit, *concept.unit_aliases.values()):
        if units.ucum_code(unit) is None:
            raise RuleError(f"{path.name}: field observations/{name}: unknown UCUM unit {unit!r}")
    if (
        units.convert(
            1.0,
            concept.display_unit,
            concept.unit,
            molar_mass=concept.molar_mass,
            valence=concept.valence,
            scale=concept.scale,
        )
        is None
    ):
        raise RuleError(
            f"{path.name}: field observations/{name}: display_unit "
            f"{concept.display_unit!r} cannot be converted to {concept.unit!r}"
        )
    return concept


def _shared_definitions(cards_dir: Path) -> tuple[list[dict], dict[str, list]]:
    """Medication classes and coded value sets defined once in cards/valuesets/ for every
    route: (classes, {value set name: entries})."""
    route_schema = _schema("rules-route.json")
    schema = {
        "type": "object",
        "additionalProperties": False,
        "$defs": route_schema["$defs"],
        "properties": {
            "medications": route_schema["properties"]["medications"],
            "value_sets": route_schema["properties"]["value_sets"],
        },
    }
    classes: list[dict] = []
    value_sets: dict[str, list] = {}
    seen: dict[str, str] = {}
    for path in sorted((cards_dir / SHARED_DIR).glob("*.yaml")):
        data = _read(path)
        _validate(path, data, schema)
        for name, entries in data.get("value_sets", {}).items():
            if name in value_sets or name == GATE_VALUE_SET:
                raise RuleError(
                    f"{path.name}: field value_sets/{name}: already defined "
                    f"in {seen.get('value set ' + name, COMMON_FILE)}"
                )
            seen["value set " + name] = path.name
            value_sets[name] = entries
        for drug_class in data.get("medications", []):
            if drug_class["class"] in seen:
                raise RuleError(
                    f"{path.name}: field medications: class {drug_class['class']!r} "
                    f"is already defined in {seen[drug_class['class']]}"
                )
            seen[drug_class["class"]] = path.name
            classes.append(drug_class)
    return classes, value_sets


def _compile_route(
    path: Path, data: dict, concepts: dict, shared_medications: list[dict], gate: dict
) -> Route:
    local = {c["class"] for c in data.get("medications", [])}
    clash = local & {c["class"] for c in shared_medications}
    if clash:
        raise RuleError(
            f"{path.name}: field medications: {sorted(clash)} already defined in {SHARED_DIR}/"
        )
    data = {**data, "medications": shared_medications + data.get("medications", [])}
    used = {name for c in data["criteria"] for name in c.get("value_sets", [])}
    redefined = sorted(set(data.get("value_sets", {})) & set(gate))
    if redefined:
        raise RuleError(
            f"{path.name}: field value_sets: {redefined} already defined in {SHARED_DIR}/ "
            "(or the gate): use the shared definition, or give a different set its own name"
        )
    shared = {name: entries for name, entries in gate.items() if name in used}
    value_sets = {
        name: ValueSet.from_entries(name, entries)
        for name, entries in {**shared, **data.get("value_sets", {})}.items()
    }
    limits: dict[str, float] = {}
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
            limits[criterion["id"]] = units.convert(
                criterion["threshold"]["value"],
                unit,
                concept.unit,
                molar_mass=concept.molar_mass,
                valence=concept.valence,
                scale=concept.scale,
            )
            if limits[criterion["id"]] is None:
                raise RuleError(
                    f"{where}/threshold/unit: {unit!r} cannot be converted to {concept.unit!r}"
                )
    for i, criterion in enumerate(data["criteria"]):
        refs = criterion.get("of", []) + criterion.get("unless", [])
        if "started_on_or_after" in criterion:
            refs = refs + [criterion["started_on_or_after"]]
        for ref in refs:
            if ref not in ids:
                raise RuleError(f"{path.name}: field criteria/{i}: unknown criterion {ref!r}")
    for i, variant in enumerate(data.get("variants", [])):
        for ref in variant["when"]:
            if ref not in ids:
                raise RuleError(f"{path.name}: field variants/{i}/when: unknown criterion {ref!r}")
    content_of = {}
    for i, criterion in enumerate(data["criteria"]):
        name = criterion.get("content")
        if name is not None and name not in data.get("content", {}):
            raise RuleError(f"{path.name}: field criteria/{i}/content: unknown content {name!r}")
        if criterion.get("fires", True) and not criterion.get("context") and name is None:
            raise RuleError(
                f"{path.name}: field criteria/{i}/content: a criterion that makes "
                "a card needs its next step (content)"
            )
        if name is not None:
            content_of[criterion["id"]] = name
    referral = None
    if "referral" in data:
        code = data["referral"]["code"]
        referral = Concept(canonical_system(code["system"]), str(code["code"]), code["display"])
    medications, names = _compile_medications(data.get("medications", []))
    return Route(
        limits=limits,
        content_of=content_of,
        needs=_needs(path.name, data["criteria"], value_sets, concepts),
        code=data["route"],
        title=data["title"],
        indicator=data["indicator"],
        order=data.get("order", 100),
        data=data,
        criteria=data["criteria"],
        value_sets=value_sets,
        referral=referral,
        medications=medications,
        medication_names=names,
        source_file=path.name,
    )


def _concept_names(criterion: dict) -> list[str]:
    names = [criterion["concept"]] if "concept" in criterion else []
    if "estimate" in criterion:
        names.append(criterion.get("estimate_from", "creatinine"))
    for group in criterion.get("groups", []):
        names.extend(group["concepts"])
    return names


def _compile_medications(classes: list[dict]):
    """RxNorm ingredient and product codes -> (ingredient, class), and a name matcher."""
    entries, names = [], {}
    for drug_class in classes:
        for ingredient in drug_class["ingredients"]:
            info = {
                "class": drug_class["class"],
                "class_label": drug_class["label"],
                "ingredient": ingredient["display"],
                "evidence": drug_class.get("evidence"),
            }
            # Product codes carry their source; an ingredient code may be flagged unverified.
            codes = (
                [{**ingredient, "verified": ingredient.get("status") != "unverified"}]
                if "code" in ingredient
                else []
            )  # no verified code: matched by name
            codes += [{**product, "verified": True} for product in ingredient.get("products", [])]
            for code in codes:
                entries.append(
                    {
                        "system": "rxnorm",
                        "code": code["code"],
                        "display": code["display"],
                        "info": {**info, "verified": code["verified"]},
                    }
                )
            for name in [ingredient["display"], *ingredient.get("names", [])]:
                names.setdefault(name.lower(), []).append(info)
    if not names:
        return None, None
    value_set = ValueSet.from_entries("medications", entries)  # may be empty: names only
    # A multi-ingredient product (e.g. hydrochlorothiazide/triamterene) belongs to every
    # class of its ingredients, so each code maps to a list of (ingredient, class) entries.
    value_set.info = {}
    for e in entries:
        bucket = value_set.info.setdefault((RXNORM, str(e["code"])), [])
        if e["info"] not in bucket:
            bucket.append(e["info"])
    return value_set, NameMatcher(names)


class NameMatcher:
    """Finds ingredient and brand names (whole words, any case) in medication texts with one
    regex, and failing that a close misspelling ("Simvistatin") with ``difflib``.

    The lookarounds make "estrogens, conjugated (USP)" match even though it ends in ")".
    Matches are remembered per text (``lru_cache``): charts repeat the same product names.
    """

    MEMO_TEXT_LIMIT = 256  # longer texts (a pasted document) are matched, not remembered
    SIMILARITY = 0.88  # difflib ratio: "simvistatin"/"simvastatin" 0.91, but
    # "levalbuterol"/"albuterol" (another drug) 0.86
    SHORTEST_FUZZY = 6  # shorter words are only matched exactly

    def __init__(self, names: dict[str, list[dict]]):
        self.infos = names
        alternatives = sorted(names, key=len, reverse=True)  # longest name wins
        self.pattern = re.compile(
            r"(?<!\w)(" + "|".join(map(re.escape, alternatives)) + r")(?!\w)", re.IGNORECASE
        )
        self.single_words = [n for n in names if n.isalpha() and len(n) >= self.SHORTEST_FUZZY]
        self._remembered = lru_cache(maxsize=8192)(self._match)

    def infos_in(self, texts: list[str]) -> list[tuple[dict, str | None]]:
        """(ingredient and class entry, the misspelt word or None), in order of appearance."""
        found: list[tuple[dict, str | None]] = []
        for text in texts:
            matched = (
                self._remembered(text) if len(text) <= self.MEMO_TEXT_LIMIT else self._match(text)
            )
            for info, fuzzy in matched:
                if all(info is not other for other, _ in found):
                    found.append((info, fuzzy))
        return found

    def _match(self, text: str) -> tuple[tuple[dict, str | None], ...]:
        exact = tuple(
            (info, None)
            for match in self.pattern.finditer(text)
            for info in self.infos[match.group(1).lower()]
        )
        if exact:
            return exact
        fuzzy = []
        for word in re.findall(rf"[A-Za-z]{{{self.SHORTEST_FUZZY},}}", text):
            word_lower = word.lower()
            close = [
                name
                for name in difflib.get_close_matches(
                    word_lower, self.single_words, n=1, cutoff=self.SIMILARITY
                )
                if name[0] == word_lower[0]
            ]  # a misspelling keeps its first letter
            fuzzy += [(info, word) for name in close for info in self.infos[name]]
        return tuple(fuzzy)
