"""The rule model the loader builds once at start-up: routes, their rules and card content.

Every field is typed and checked when the files are loaded; nothing here reads YAML while a
request is evaluated. Criterion types live in ``criteria/`` (one class each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds_service.engine.shapes import Spec
from cds_service.engine.terminology import CodeIndex, Concept, ValueSet
from cds_service.engine.thresholds import NamedThreshold
from cds_service.errors import RuleError as RuleError  # re-exported: the loaders import it here

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.criteria.base import Criterion, Need
    from cds_service.engine.medications import MedicationClassifier


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class EvidenceLevel:
    level: str  # "not graded" where the references give no grade
    source: str


DRUG_ACTIONS = ("stop", "change", "continue", "start", "review")


@dataclass(frozen=True)
class Step:
    """One next step of a content block and when it fits the patient (all must hold):
    ``when``/``unless`` name criteria of the route (a finding: dialysis, a coded DVT);
    ``for_classes``: a medicine of one of these classes is on the card; ``unless_recent``:
    no result of these tests in the last ``recent_days``. What the one plan per patient
    compares across cards (``engine.plan``): the tests it ``asks`` for (``unless_recent``
    counts too) and what it does to a drug class (``drugs``: class -> stop, change, ...).
    ``refers_to``: another route whose referral the step asks for; it holds only with no open
    referral of that route on record, and gives way to that route's own card in the plan."""

    text: str
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    for_classes: frozenset[str] = frozenset()
    unless_recent: tuple[str, ...] = ()
    recent_days: int = 30
    asks: tuple[str, ...] = ()
    drugs: tuple[tuple[str, str], ...] = ()  # (class, action), action in DRUG_ACTIONS
    refers_to: str | None = None  # code of the route whose referral the step asks for
    # The tests this step asks for (ordered or repeated), by concept name: worked out once
    # when the rules load, not on each of the many times a call's plan compares steps.
    tests: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", frozenset(self.asks) | frozenset(self.unless_recent))

    @property
    def conditional(self) -> bool:
        """Whether the step depends on the record (any condition at all)."""
        return bool(
            self.when or self.unless or self.for_classes or self.unless_recent or self.refers_to
        )


@dataclass(frozen=True)
class Content:
    """What a card says for one rule that fired: its next steps (each with the condition
    under which it fits the patient), caveats and links, and the strength of the evidence
    behind it (for the explanation page)."""

    steps: tuple[Step, ...]
    caveats: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    evidence_level: EvidenceLevel | None = None


@dataclass(frozen=True)
class Variant:
    """Card wording for a subset of a route's rules; among the variants whose ``when``
    matches, the one with the lowest ``precedence`` number is chosen."""

    index: int  # place in the file
    when: frozenset[str]
    precedence: int
    only: bool = False  # applies only when every fired rule is in ``when``
    summary: str | None = None
    referral_label: str | None = None
    priority: str | None = None
    no_referral: bool = False

    def matches(self, fired: list[str]) -> bool:
        return set(fired) <= self.when if self.only else bool(self.when & set(fired))


@dataclass(frozen=True)
class Referral:
    """The referral a route's card suggests, and how one already open is recognised: by its
    code or ``also`` (other referral codes for the same specialist, any system), or by a
    specialty word in its text or display naming none of ``elsewhere``, the other routes'
    words and common.yaml's other specialties (``referrals.open_referral``)."""

    label: str
    code: Concept
    priority: str
    also: tuple[Concept, ...] = ()
    words: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()  # filled by the loader, which knows every route
    text: str | None = None  # the referral as clinicians read it, when the display differs


@dataclass(frozen=True)
class Order:
    """A lab test the workup card offers to order."""

    code: Concept


URGENT_MAX_DAYS = 1  # a critical (urgent) card is never suppressed for longer, whatever the file


@dataclass(frozen=True)
class Suppression:
    """A route's ``suppression`` block: overrides with these reasons hide its card for
    ``days`` (at most URGENT_MAX_DAYS for a critical route: ``service.suppression_policy``
    refuses more, and the store caps what it records)."""

    reasons: tuple[str, ...]
    days: int


@dataclass(frozen=True)
class SharedCriterion:
    """A criterion defined once in ``cards/shared/`` (a threshold, a coded problem, a
    medicine class), as written; each route that uses it compiles its own copy, adding
    only its content, indicator, unless and evidence, under the same id."""

    id: str
    file: str  # e.g. "shared/criteria.yaml"
    where: str  # "shared/criteria.yaml: field criteria/3", for messages
    spec: Spec = field(repr=False)


@dataclass(eq=False)  # a route is itself: compared and hashed by identity
class Route:
    """One referral route (one rule file), compiled."""

    code: str
    title: str
    indicator: str
    order: int
    source_file: str
    summary: str
    links: tuple[Link, ...]
    criteria: dict[str, Criterion]  # by id, in file order
    content: dict[str, Content]
    content_of: dict[str, str]  # criterion id -> content name
    variants: tuple[Variant, ...]
    value_sets: dict[str, ValueSet]
    needs: dict[str, Need]
    referral: Referral | None = None
    orders: dict[str, Order] = field(default_factory=dict)
    orders_label: str | None = None
    suppression: tuple[Suppression, ...] = ()
    medications: MedicationClassifier | None = None
    spec: Spec = field(default_factory=dict, repr=False)  # as written: explanation pages only
    referral_set: ValueSet | None = None  # to find an open referral
    shared: frozenset[str] = frozenset()  # ids of its criteria defined in cards/shared/

    def __post_init__(self) -> None:
        self.shown = [c for c in self.criteria.values() if c.fires or c.context]
        # Every (resource type, value set) a criterion of the route can be decided on.
        self.presences = frozenset(p for need in self.needs.values() for p in need.data)
        if self.referral is not None:
            self.referral_set = ValueSet("referral", [self.referral.code, *self.referral.also], [])

    def variant_for(self, fired: list[str]) -> Variant | None:
        return next((v for v in self.variants if v.matches(fired)), None)


@dataclass
class RuleSet:
    """Every route, the gate (the leg-cramp problem) and the lab concepts, compiled once."""

    routes: list[Route]
    concepts: dict[str, ObservationConcept]
    gate: ValueSet
    override_reasons: list[dict[str, str | None]]  # system (canonical), code, display
    source_attributes: dict[str, Any]
    status_sets: dict[str, frozenset[str]]
    spec: Spec = field(default_factory=dict, repr=False)  # common.yaml as written: explain only
    shared_criteria: dict[str, SharedCriterion] = field(default_factory=dict)
    referral_words: tuple[str, ...] = ()  # an open referral's text must say it is one
    thresholds: dict[str, NamedThreshold] = field(default_factory=dict)  # cards/shared/
    codes: CodeIndex = field(init=False)

    def __post_init__(self) -> None:
        self.routes = sorted(self.routes, key=lambda r: r.order)
        self.codes = CodeIndex(
            [self.gate]
            + [c.value_set for c in self.concepts.values()]
            + [vs for route in self.routes for vs in route.value_sets.values()]
            + [r.referral_set for r in self.routes if r.referral_set]
        )

    @property
    def observation_codes(self) -> list[Concept]:
        """Every observation code a rule reads, for the prefetch template."""
        seen: dict[tuple[str, str], Concept] = {}
        for concept in self.concepts.values():
            for member in concept.value_set.exact.values():
                seen[(member.system, member.code)] = member
        return list(seen.values())
