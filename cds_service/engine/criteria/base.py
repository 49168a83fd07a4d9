"""What every criterion type has in common, and the registry of types.

A criterion type is one subclass of ``Criterion`` with a ``type_name`` (the rule files'
``type``), a ``compile`` that reads its fields from the rule file once at start-up, ``needs``
(what a record must hold for it to possibly hold) and ``evaluate`` (its facts). Defining the
subclass registers it; its fields also need an entry in ``schemas/rules-route.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from cds_service.engine.model import EvidenceLevel, RuleError
from cds_service.engine.shapes import Spec
from cds_service.engine.thresholds import Thresholds

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.facts import Fact
    from cds_service.engine.medications import MedicationClassifier
    from cds_service.engine.record import Presence
    from cds_service.engine.terminology import ValueSet

TYPES: dict[str, type[Criterion]] = {}


@dataclass(frozen=True)
class Need:
    """What a record must hold for a criterion to possibly hold, decided before running it.

    ``data``: at least one of these (resource type, value set) pairs is in
    ``Record.present()`` (value set None: any resource of the type was received);
    ``all``/``any``: of the criteria in ``parts``;
    ``always``: cannot be ruled out up front (a missing result holds on an empty record).
    """

    kind: str
    data: frozenset[Presence] = frozenset()
    parts: tuple[str, ...] = ()


@dataclass
class Definitions:
    """What a route's criteria may refer to by name, while its file is compiled."""

    file: str
    value_sets: dict[str, ValueSet]
    concepts: dict[str, ObservationConcept]
    status_sets: dict[str, frozenset[str]]
    orders: frozenset[str]
    medications: MedicationClassifier | None
    ids: frozenset[str]
    thresholds: Thresholds = field(default_factory=Thresholds)  # named, cards/shared/

    def value_set(self, name: str, where: str) -> ValueSet:
        if name not in self.value_sets:
            raise RuleError(f"{where}/value_sets: unknown value set {name!r}")
        return self.value_sets[name]

    def concept(self, name: str, where: str) -> ObservationConcept:
        if name not in self.concepts:
            raise RuleError(f"{where}: unknown observation concept {name!r}")
        return self.concepts[name]

    def criterion(self, name: str, where: str) -> str:
        if name not in self.ids:
            raise RuleError(f"{where}: unknown criterion {name!r}")
        return name

    def statuses(self, spec: Spec, where: str, default: str) -> frozenset[str]:
        name = spec.get("statuses", default)
        if name not in self.status_sets:
            raise RuleError(f"{where}/statuses: unknown status set {name!r}")
        return self.status_sets[name]


@dataclass
class Criterion:
    """One rule or building block of a route file."""

    type_name: ClassVar[str]

    id: str
    fires: bool  # makes a card when it holds (a rule), or only feeds other rules
    context: bool  # shown under "Also on record" when the card fires
    indicator: str | None
    content: str | None
    evidence: str  # shown, hidden (counts, not listed) or newest (only the newest listed)
    unless: tuple[str, ...]
    window: timedelta | None  # look-back from today
    evidence_level: EvidenceLevel | None  # overrides its content block's (explanation pages)
    note: str | None  # the rule author's explanation, shown on the explanation pages
    short_name: str | None  # the finding in a few words, for the card's summary
    spec: Spec = field(repr=False)  # as written, for the explanation pages

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" in cls.__dict__:
            TYPES[cls.type_name] = cls

    @classmethod
    def build(cls, spec: Spec, defs: Definitions, where: str, fires: bool) -> Criterion:
        """The criterion of a rule file entry (already schema-valid), its names resolved;
        ``fires``: listed under ``criteria`` (makes a card), not ``building_blocks``.
        ``when: [ids]`` is an ``all`` of those criteria."""
        if "when" in spec:
            when = spec["when"]
            spec = {**spec, "type": "all", "of": [when] if isinstance(when, str) else when}
        days = spec.get("lookback_days")
        level = spec.get("evidence_level")
        common: dict[str, Any] = dict(
            id=spec["id"],
            fires=fires,
            context=spec.get("context", False),
            indicator=spec.get("indicator"),
            content=spec.get("content"),
            evidence=spec.get("evidence", "shown"),
            unless=tuple(defs.criterion(u, where) for u in spec.get("unless", ())),
            window=timedelta(days=days) if days is not None else None,
            evidence_level=EvidenceLevel(level["level"], level["source"]) if level else None,
            note=spec.get("note"),
            short_name=spec.get("short_name"),
            spec=spec,
        )
        kind = TYPES[spec["type"]]
        return kind(**common, **kind.own_fields(spec, defs, where))

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        """The type's own fields, read from its rule file entry."""
        raise NotImplementedError

    @property
    def parts(self) -> tuple[str, ...]:
        """The criteria this one is made of (for composed criteria)."""
        return ()

    def need(self) -> Need:
        raise NotImplementedError

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        raise NotImplementedError
