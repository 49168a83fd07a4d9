"""Compile one route file into a ``model.Route``: its criteria (one typed object each), the
card content they name, variants, referral, orders and suppression, every name resolved."""

from __future__ import annotations

from dataclasses import dataclass, field

from cds_service.engine.concepts import ObservationConcept
from cds_service.engine.criteria import Criterion, Definitions, Need
from cds_service.engine.medications import MedicationClassifier
from cds_service.engine.model import (
    Content,
    EvidenceLevel,
    Link,
    Order,
    Referral,
    Route,
    RuleError,
    SharedCriterion,
    Step,
    Suppression,
    Variant,
)
from cds_service.engine.shapes import Spec
from cds_service.engine.terminology import Concept, ValueSet, canonical_system
from cds_service.engine.thresholds import Thresholds


@dataclass
class Shared:
    """What every route may use: the shared value sets, medication classes, concepts,
    criteria and named thresholds."""

    value_sets: dict[str, ValueSet]
    medication_classes: list[Spec]
    medications: MedicationClassifier | None
    concepts: dict[str, ObservationConcept]
    status_sets: dict[str, frozenset[str]]
    criteria: dict[str, SharedCriterion] = field(default_factory=dict)  # cards/shared/
    thresholds: Thresholds = field(default_factory=Thresholds)  # cards/shared/, by name

    def definitions(self, file: str) -> Definitions:
        """What a shared criterion may name: nothing route-local."""
        return Definitions(
            file=file,
            value_sets=self.value_sets,
            concepts=self.concepts,
            status_sets=self.status_sets,
            orders=frozenset(),
            medications=self.medications,
            ids=frozenset(),  # a shared criterion refers to no other criterion
            thresholds=self.thresholds,
        )


# What a route adds where it uses a shared criterion (as rules-route.json's $defs/use).
ROUTE_LOCAL_KEYS = ("content", "indicator", "unless", "evidence", "evidence_level", "context")


def compile_route(file: str, data: Spec, shared: Shared) -> Route:
    data = {**data, "_file": file}
    expanded, uses = _uses_of_shared(file, data, shared)
    data.update(expanded)
    value_sets = _value_sets(file, data, shared)
    medications = shared.medications
    if data.get("medications"):  # a route's own classes, on top of the shared ones
        _check_no_clash(file, data, shared)
        medications = MedicationClassifier(shared.medication_classes + data["medications"])
    entries = _entries(data)
    ids = [spec["id"] for _where, spec, _fires in entries]
    duplicate = next((i for i, c in enumerate(ids) if c in ids[:i]), None)
    if duplicate is not None:
        raise RuleError(f"{entries[duplicate][0]}/id: duplicate id {ids[duplicate]!r}")
    defs = Definitions(
        file=file,
        value_sets=value_sets,
        concepts=shared.concepts,
        status_sets=shared.status_sets,
        orders=frozenset(data.get("orders", {})),
        medications=medications,
        ids=frozenset(ids),
        thresholds=shared.thresholds,
    )
    criteria = {
        spec["id"]: Criterion.build(spec, defs, where, fires) for where, spec, fires in entries
    }
    content = {
        name: _content(block, defs, f"{file}: field content/{name}")
        for name, block in data.get("content", {}).items()
    }
    read = {name for c in criteria.values() for name in _value_set_names(c)}
    return Route(
        code=data["route"],
        title=data["title"],
        indicator=data["indicator"],
        order=data.get("order", 100),
        source_file=file,
        summary=data["summary"],
        links=tuple(Link(link["label"], link["url"]) for link in data.get("links", [])),
        criteria=criteria,
        content=content,
        content_of=_content_of(file, criteria, content),
        variants=_variants(file, data, defs),
        value_sets={name: vs for name, vs in value_sets.items() if name in read},
        needs=_needs(file, criteria),
        referral=_referral(data),
        orders={key: Order(_concept(entry)) for key, entry in data.get("orders", {}).items()},
        orders_label=data.get("orders_label"),
        suppression=tuple(
            Suppression(tuple(s["reasons"]), int(s["days"])) for s in data.get("suppression") or []
        ),
        medications=medications,
        spec=data,
        shared=uses,
    )


def _uses_of_shared(file: str, data: Spec, shared: Shared) -> tuple[Spec, frozenset[str]]:
    """The route's criteria and building blocks with each ``use: <id>`` replaced by the
    shared definition plus the route's own keys, and the ids so used. An entry that defines
    a shared id itself is refused: one definition per clinical concept."""
    expanded: Spec = {}
    uses: list[str] = []
    for section in ("criteria", "building_blocks"):
        if section not in data:
            continue
        entries: list[Spec] = []
        for i, entry in enumerate(data.get(section, [])):
            where = f"{file}: field {section}/{i}"
            name = entry.get("use")
            if name is None:
                if entry["id"] in shared.criteria:
                    defined = shared.criteria[entry["id"]]
                    raise RuleError(
                        f"{where}/id: {entry['id']!r} is defined in {defined.file}: write "
                        f"`use: {entry['id']}` (adding only {', '.join(ROUTE_LOCAL_KEYS)}) "
                        "instead of defining it again"
                    )
                entries.append(entry)
                continue
            definition = shared.criteria.get(name)
            if definition is None:
                raise RuleError(f"{where}/use: unknown shared criterion {name!r} (cards/shared/)")
            local = {key: entry[key] for key in ROUTE_LOCAL_KEYS if key in entry}
            entries.append({**definition.spec, **local})
            uses.append(name)
        expanded[section] = entries
    return expanded, frozenset(uses)


def _entries(data: Spec) -> list[tuple[str, Spec, bool]]:
    """(where, spec, makes a card) of every rule, then every building block."""
    file = data["_file"]
    return [
        (f"{file}: field {section}/{i}", spec, section == "criteria")
        for section in ("criteria", "building_blocks")
        for i, spec in enumerate(data.get(section, []))
    ]


def _value_sets(file: str, data: Spec, shared: Shared) -> dict[str, ValueSet]:
    local = data.get("value_sets", {})
    redefined = sorted(set(local) & set(shared.value_sets))
    if redefined:
        raise RuleError(
            f"{file}: field value_sets: {redefined} already defined in valuesets/ (or the "
            "gate): use the shared definition, or give a different set its own name"
        )
    return {
        **shared.value_sets,
        **{name: ValueSet.from_entries(name, entries) for name, entries in local.items()},
    }


def _value_set_names(criterion: Criterion) -> list[str]:
    return [vs.name for vs in getattr(criterion, "value_sets", ())]


def _check_no_clash(file: str, data: Spec, shared: Shared) -> None:
    clash = {c["class"] for c in data["medications"]} & {
        c["class"] for c in shared.medication_classes
    }
    if clash:
        raise RuleError(f"{file}: field medications: {sorted(clash)} already defined in valuesets/")


def _content(block: Spec, defs: Definitions, where: str) -> Content:
    """A content block: ``next_step`` (one step, always shown) or ``steps``."""
    level = block.get("evidence_level")
    specs = block.get("steps") or [{"text": block["next_step"]}]
    return Content(
        steps=tuple(_step(spec, defs, f"{where}/steps/{i}") for i, spec in enumerate(specs)),
        caveats=tuple(c.strip() for c in block.get("caveats", [])),
        links=tuple(Link(link["label"], link["url"]) for link in block.get("links", [])),
        evidence_level=EvidenceLevel(level["level"], level["source"]) if level else None,
    )


def _step(spec: Spec, defs: Definitions, where: str) -> Step:
    """One next step, every name it holds on resolved: criteria of the route, observation
    concepts, medication classes (each defined once, elsewhere)."""
    known = defs.medications.classes if defs.medications else set()
    classes = {*spec.get("for_classes", []), *spec.get("drugs", {})}
    unknown = sorted(classes - set(known))
    if unknown:
        raise RuleError(f"{where}: unknown medication class {unknown[0]!r}")
    for key in ("unless_recent", "asks"):
        for name in spec.get(key, []):
            defs.concept(name, f"{where}/{key}")
    return Step(
        text=" ".join(spec["text"].split()),
        when=tuple(defs.criterion(c, f"{where}/when") for c in spec.get("when", [])),
        unless=tuple(defs.criterion(c, f"{where}/unless") for c in spec.get("unless", [])),
        for_classes=frozenset(spec.get("for_classes", [])),
        unless_recent=tuple(spec.get("unless_recent", [])),
        recent_days=int(spec.get("recent_days", 30)),
        asks=tuple(spec.get("asks", [])),
        drugs=tuple(sorted(spec.get("drugs", {}).items())),
        refers_to=spec.get("refers_to"),
    )


def _content_of(
    file: str, criteria: dict[str, Criterion], content: dict[str, Content]
) -> dict[str, str]:
    """Which content block each rule shows; a rule that makes a card must name one."""
    content_of: dict[str, str] = {}
    for i, criterion in enumerate(criteria.values()):
        name = criterion.content
        if name is not None and name not in content:
            raise RuleError(f"{file}: field criteria/{i}/content: unknown content {name!r}")
        if criterion.fires and not criterion.context and name is None:
            raise RuleError(
                f"{file}: field criteria/{i}/content: a criterion that makes "
                "a card needs its next step (content)"
            )
        if name is not None:
            content_of[criterion.id] = name
    return content_of


def _variants(file: str, data: Spec, defs: Definitions) -> tuple[Variant, ...]:
    variants: list[Variant] = []
    for i, spec in enumerate(data.get("variants", [])):
        where = f"{file}: field variants/{i}/when"
        variants.append(
            Variant(
                index=i,
                when=frozenset(defs.criterion(ref, where) for ref in spec["when"]),
                precedence=spec.get("precedence", i + 1),
                only=spec.get("only", False),
                summary=spec.get("summary"),
                referral_label=spec.get("referral_label"),
                priority=spec.get("priority"),
                no_referral=spec.get("no_referral", False),
            )
        )
    precedences = [v.precedence for v in variants]
    if len(set(precedences)) != len(precedences):
        raise RuleError(f"{file}: field variants: two variants have the same precedence")
    return tuple(sorted(variants, key=lambda v: v.precedence))


def _concept(entry: Spec) -> Concept:
    return Concept(canonical_system(entry["system"]) or "", str(entry["code"]), entry["display"])


def _referral(data: Spec) -> Referral | None:
    if "referral" not in data:
        return None
    spec = data["referral"]
    recognised = spec.get("recognised_by") or {}
    return Referral(
        spec["label"],
        _concept(spec["code"]),
        spec["priority"],
        also=tuple(_concept(entry) for entry in recognised.get("codes", [])),
        words=tuple(recognised.get("words", [])),
        text=spec.get("text"),
    )


def _needs(file: str, criteria: dict[str, Criterion]) -> dict[str, Need]:
    """Each criterion's Need; a cycle of references is a rule file error."""
    needs: dict[str, Need] = {}

    def need(criterion_id: str, path: tuple[str, ...]) -> None:
        if criterion_id in path:
            raise RuleError(f"{file}: criteria {' -> '.join(path + (criterion_id,))} form a cycle")
        if criterion_id not in needs:
            criterion = criteria[criterion_id]
            for part in criterion.parts:
                need(part, path + (criterion_id,))
            needs[criterion_id] = criterion.need()

    for criterion_id in criteria:
        need(criterion_id, ())
    return needs
