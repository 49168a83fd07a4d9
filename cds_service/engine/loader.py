"""Read the rule files once at start-up and build the rule model from them.

``common.yaml`` holds the leg-cramp gate, the lab concepts, the named status sets and the
override reasons; ``valuesets/*.yaml`` the coded value sets and medication classes every
route shares; ``shared/*.yaml`` the named thresholds (clinical cut-offs) and the criteria
several routes read, defined once; one file per route its rules and card content. Files are
validated against the JSON Schemas in ``schemas/`` and cross-checked (names, units,
references, cycles, one definition per id), so a bad file stops the service with a message
naming the file and field.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from cds_service.engine import units
from cds_service.engine.concepts import ObservationConcept
from cds_service.engine.criteria import Criterion
from cds_service.engine.medications import MedicationClassifier
from cds_service.engine.model import Route, RuleError, RuleSet, SharedCriterion
from cds_service.engine.route_loader import Shared, compile_route
from cds_service.engine.shapes import Spec
from cds_service.engine.terminology import ValueSet, canonical_system

COMMON_FILE = "common.yaml"
SHARED_DIR = "valuesets"  # cards/valuesets/*.yaml: definitions every route may use
CRITERIA_DIR = "shared"  # cards/shared/*.yaml: criteria defined once, used by id
GATE_VALUE_SET = "leg-cramps"  # the gate's codes, for routes that ask how new the cramps are
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(cards_dir: Path) -> RuleSet:
    """The rule set of a cards directory; RuleError names the file and field at fault."""
    cards_dir = Path(cards_dir)
    common_path = cards_dir / COMMON_FILE
    if not common_path.is_file():
        raise RuleError(f"{COMMON_FILE}: missing from {cards_dir}")
    common = read(common_path)
    validate(common_path, common, schema("rules-common.json"))
    concepts = {
        name: _concept(name, spec, common_path) for name, spec in common["observations"].items()
    }
    status_sets = {name: frozenset(codes) for name, codes in common["status_sets"].items()}
    shared = _shared_definitions(cards_dir, common, concepts, status_sets)
    shared.criteria = _shared_criteria(cards_dir, shared)
    routes: list[Route] = []
    seen: dict[str, str] = {}
    defined: dict[str, str] = {}  # criterion id -> "file: field ..." that defines it
    for path in sorted(cards_dir.glob("*.yaml")):
        if path.name == COMMON_FILE:
            continue
        data = read(path)
        validate(path, data, schema("rules-route.json"))
        if data["route"] in seen:
            raise RuleError(
                f"{path.name}: field route: '{data['route']}' is already "
                f"defined in {seen[data['route']]}"
            )
        seen[data["route"]] = path.name
        routes.append(compile_route(path.name, data, shared))
        _check_defined_once(path.name, data, defined)
    if not routes:
        raise RuleError(f"no route files (*.yaml) in {cards_dir}")
    _name_other_specialties(routes, tuple(common["referral_other_specialties"]))
    _check_referred_routes(routes)
    return RuleSet(
        routes=routes,
        concepts=concepts,
        gate=ValueSet.from_entries("gate", common["gate"]["value_set"]),
        override_reasons=[
            {
                "system": canonical_system(r["system"]),
                "code": str(r["code"]),
                "display": r["display"],
            }
            for r in common["override_reasons"]
        ],
        source_attributes=common.get("source_attributes") or {},
        status_sets=status_sets,
        spec=common,
        shared_criteria=shared.criteria,
        thresholds=shared.thresholds.by_name,
        referral_words=tuple(common["referral_words"]),
    )


def _name_other_specialties(routes: list[Route], others: tuple[str, ...]) -> None:
    """Give each route's referral the words that name another specialty (the other routes'
    and ``others``), so a request naming one of them is never taken for its referral. A word
    naming two specialties would make a request ambiguous: it is a rule file error."""
    owner = {w.casefold(): f"{COMMON_FILE}: field referral_other_specialties" for w in others}
    for route in routes:
        for word in route.referral.words if route.referral else ():
            where = owner.setdefault(word.casefold(), route.source_file)
            if where != route.source_file:
                raise RuleError(
                    f"{route.source_file}: field referral/recognised_by/words: '{word}' "
                    f"also names another specialty ({where})"
                )
    for route in routes:
        if route.referral is None:
            continue
        own = {w.casefold() for w in route.referral.words}
        words = [w for r in routes if r is not route and r.referral for w in r.referral.words]
        elsewhere = tuple(dict.fromkeys(w for w in [*words, *others] if w.casefold() not in own))
        route.referral = replace(route.referral, elsewhere=elsewhere)


def _check_referred_routes(routes: list[Route]) -> None:
    """A step's ``refers_to`` names another route that has a referral to ask for."""
    referring = {r.code: r for r in routes if r.referral is not None}
    for route in routes:
        for name, block in route.content.items():
            for step in block.steps:
                target = step.refers_to
                if target is not None and (target == route.code or target not in referring):
                    raise RuleError(
                        f"{route.source_file}: field content/{name}/steps: refers_to "
                        f"{target!r} is not another route with a referral"
                    )


@cache
def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("cds_service.schemas").joinpath(name).read_text()
    )
    return loaded


def read(path: Path) -> Spec:
    try:
        # libyaml's parser (PyYAML's wheels carry it): the pure-Python one takes over a second
        # for the rule files, most of the service's start-up.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path.name}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise RuleError(f"{path.name}: must be a mapping at the top level")
    return data


def validate(path: Path, data: Spec, file_schema: dict[str, Any]) -> None:
    # jsonschema-rs answers yes or no in milliseconds; jsonschema, ten times slower, is only
    # asked for the message when a file is wrong (its messages name the field).
    if jsonschema_rs.validator_for(file_schema).is_valid(data):
        return
    import jsonschema  # ~50 ms of start-up otherwise, for the message of a wrong file only

    validator = jsonschema.Draft202012Validator(file_schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RuleError(f"{path.name}: field {where}: {err.message}")


def _shared_definitions(
    cards_dir: Path,
    common: Spec,
    concepts: dict[str, ObservationConcept],
    status_sets: dict[str, frozenset[str]],
) -> Shared:
    """Medication classes and coded value sets defined once in cards/valuesets/."""
    route_schema = schema("rules-route.json")
    file_schema = {
        "type": "object",
        "additionalProperties": False,
        "$defs": route_schema["$defs"],
        "properties": {
            "medications": route_schema["properties"]["medications"],
            "value_sets": route_schema["properties"]["value_sets"],
            # Each value set's plain name, for the explanation pages (id -> name).
            "titles": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    classes: list[Spec] = []
    value_sets: dict[str, list[Spec]] = {GATE_VALUE_SET: common["gate"]["value_set"]}
    where_defined = {GATE_VALUE_SET: COMMON_FILE}
    titles: dict[str, str] = {GATE_VALUE_SET: str(common["gate"]["finding"])}
    for path in sorted((cards_dir / SHARED_DIR).glob("*.yaml")):
        data = read(path)
        validate(path, data, file_schema)
        for name, entries in data.get("value_sets", {}).items():
            if name in value_sets:
                raise RuleError(
                    f"{path.name}: field value_sets/{name}: already defined "
                    f"in {where_defined[name]}"
                )
            where_defined[name] = path.name
            value_sets[name] = entries
        for name, title in data.get("titles", {}).items():
            if name not in data.get("value_sets", {}):
                raise RuleError(
                    f"{path.name}: field titles/{name}: no value set {name!r} in this file"
                )
            titles[name] = " ".join(title.split())
        for drug_class in data.get("medications", []):
            key = "medication class " + drug_class["class"]
            if key in where_defined:
                raise RuleError(
                    f"{path.name}: field medications: class {drug_class['class']!r} "
                    f"is already defined in {where_defined[key]}"
                )
            where_defined[key] = path.name
            classes.append(drug_class)
    return Shared(
        value_sets={
            name: ValueSet.from_entries(name, e, titles.get(name)) for name, e in value_sets.items()
        },
        medication_classes=classes,
        medications=MedicationClassifier(classes) if classes else None,
        concepts=concepts,
        status_sets=status_sets,
    )


def _shared_criteria(cards_dir: Path, shared: Shared) -> dict[str, SharedCriterion]:
    """The criteria of cards/shared/*.yaml, each id once; each is compiled here once, so a
    wrong name or unit is reported against the shared file, not against a route using it.
    The files' named thresholds (``thresholds:``) go to ``shared.thresholds`` first."""
    route_schema = schema("rules-route.json")
    file_schema = {
        **schema("rules-shared.json"),
        "$defs": {
            **route_schema["$defs"],
            "criterion": route_schema["properties"]["criteria"]["items"],
        },
    }
    found: dict[str, SharedCriterion] = {}
    for path in sorted((cards_dir / CRITERIA_DIR).glob("*.yaml")):
        data = read(path)
        validate(path, data, file_schema)
        file = f"{CRITERIA_DIR}/{path.name}"
        for name, entry in data.get("thresholds", {}).items():
            shared.thresholds.add(name, entry, f"{file}: field thresholds/{name}", shared.concepts)
        for i, spec in enumerate(data.get("criteria", [])):
            where = f"{file}: field criteria/{i}"
            if spec["id"] in found:
                raise RuleError(
                    f"{where}/id: {spec['id']!r} is already defined in {found[spec['id']].where}"
                )
            found[spec["id"]] = SharedCriterion(spec["id"], file, where, spec)
    for item in found.values():
        Criterion.build(item.spec, shared.definitions(item.file), item.where, fires=False)
    return found


def _check_defined_once(file: str, data: Spec, defined: dict[str, str]) -> None:
    """A criterion id a route defines itself may be defined by no other route: a concept two
    routes read lives in cards/shared/ (``compile_route`` refuses a local copy of those)."""
    for section in ("criteria", "building_blocks"):
        for i, spec in enumerate(data.get(section, [])):
            if "id" not in spec:
                continue  # ``use: <id>``: the shared definition
            where = f"{file}: field {section}/{i}"
            other = defined.setdefault(spec["id"], where)
            if other != where:
                raise RuleError(
                    f"{where}/id: {spec['id']!r} is already defined in {other}: define it "
                    f"once in {CRITERIA_DIR}/ and write `use: {spec['id']}` in both routes"
                )


def _concept(name: str, spec: Spec, path: Path) -> ObservationConcept:
    concept = ObservationConcept(
        name=name,
        label=spec["label"],
        unit=spec["unit"],
        display_unit=spec["display_unit"] if "display_unit" in spec else spec["unit"],
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
    where = f"{path.name}: field observations/{name}"
    plausible = spec["plausible"]
    bounds = [
        concept.convert(plausible[end], plausible["unit"], concept.unit) for end in ("low", "high")
    ]
    if bounds[0] is None or bounds[1] is None:
        raise RuleError(
            f"{where}/plausible/unit: {plausible['unit']!r} cannot be converted to {concept.unit!r}"
        )
    concept.plausible = (bounds[0], bounds[1])
    for unit in (concept.unit, concept.display_unit, *concept.unit_aliases.values()):
        if units.ucum_code(unit) is None:
            raise RuleError(f"{where}: unknown UCUM unit {unit!r}")
    if concept.convert(1.0, concept.display_unit, concept.unit) is None:
        raise RuleError(
            f"{where}: display_unit {concept.display_unit!r} cannot be converted "
            f"to {concept.unit!r}"
        )
    return concept
