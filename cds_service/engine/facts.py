"""What the engine finds: structured evidence, never wording.

A ``Fact`` is one piece of evidence behind a card: the criterion it answers, the resources it
rests on, and an ``evidence`` record of what was recorded (value, unit as reported, code,
dates, comparator) and what was derived from it (an eGFR estimated from creatinine, a calcium
corrected for albumin, a discordance). ``render.evidence`` turns these into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cds_service.engine.dates import Read
from cds_service.engine.fhir_status import reference_to
from cds_service.engine.reading import quantity_of
from cds_service.engine.shapes import Resource
from cds_service.engine.terminology import Concept

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.model import Content, Route, Step, Variant

INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Quantity:
    """A value as the laboratory sent it (``valueQuantity``), or its ``valueString``."""

    value: Any = None
    unit: str | None = None  # the human-readable unit
    code: str | None = None  # the UCUM code
    comparator: Any = None
    text: str | None = None  # valueString

    @classmethod
    def of(cls, resource: Resource) -> Quantity:
        """As sent; a number written in ``valueString`` keeps its text beside its value."""
        text = resource.get("valueString")
        text = text if isinstance(text, str) else None
        quantity = quantity_of(resource)
        if quantity is not None:
            return cls(
                quantity.get("value"),
                quantity.get("unit"),
                quantity.get("code"),
                quantity.get("comparator"),
                text if quantity.get("from_text") else None,
            )
        return cls(text=text)


# --- evidence records, one per kind of finding ------------------------------------------


@dataclass(frozen=True)
class CodedProblem:
    """A Condition: the code it carries, its clinical status and dates as read (an onset
    may be approximate, from an age or a text, or unreadable: ``reading``)."""

    code: Concept
    status: str
    onset: Read
    recorded: Read
    undated_counted: bool = False  # no usable date, counted as recent (an acute DVT)
    abatement: Read = None  # an abatement that does not end it (unreadable, after today)


@dataclass(frozen=True)
class RecordedFinding:
    """A sign recorded as an Observation coded like a problem (``also_observations``)."""

    code: Concept
    when: Read


@dataclass(frozen=True)
class ProcedureDone:
    code: Concept
    when: datetime


@dataclass(frozen=True)
class Estimate:
    """An eGFR computed with CKD-EPI 2021 from a creatinine."""

    creatinine: ObservationConcept
    value: float  # creatinine, in its concept's unit
    code: Concept
    age: int
    sex: str


@dataclass(frozen=True)
class Correction:
    """A total calcium corrected for a low albumin."""

    measured: float  # in the concept's unit
    albumin: ObservationConcept
    albumin_value: float
    albumin_when: datetime


@dataclass(frozen=True)
class Discordance:
    """A same-day reported eGFR and estimate that differ by more than ``margin``; the lower
    one was used. ``other`` is the one not used."""

    other_value: float
    other_code: Concept
    other_reported: Quantity | None  # the reported eGFR, when it is the other one
    other_estimate: Estimate | None  # the estimate, when it is the other one
    margin: float


@dataclass(frozen=True)
class Threshold:
    comparator: str
    value: float
    unit: str  # as written in the rule file


@dataclass(frozen=True)
class EarlierResult:
    """A result at least ``sustained_days`` older that also met the threshold."""

    value: float
    when: datetime
    code: Concept


@dataclass(frozen=True)
class LabResult:
    """A result that met a threshold: ``value`` in the concept's unit."""

    concept: ObservationConcept
    value: float
    when: datetime
    code: Concept
    threshold: Threshold
    reported: Quantity
    estimate: Estimate | None = None
    correction: Correction | None = None
    discordance: Discordance | None = None
    earlier: EarlierResult | None = None


@dataclass(frozen=True)
class FlaggedResult:
    """A newest result flagged critical (LL, HH, AA) whose number cannot be read."""

    concept: ObservationConcept
    flag: str
    when: datetime
    code: Concept
    reason: str


@dataclass(frozen=True)
class UnusableResult:
    """A newest result that cannot be read or is implausible, or a result that cannot be
    placed in time (``unplaced``: its date cannot be read, or is after today): for review."""

    concept: ObservationConcept
    when: Read
    code: Concept
    implausible: bool
    reason: str
    recorded: Quantity
    unplaced: bool = False


@dataclass(frozen=True)
class LastResult:
    concept: ObservationConcept
    value: float
    when: datetime
    code: Concept


@dataclass(frozen=True)
class MissingResult:
    """No usable result of a group of tests in its window; ``last`` is the newest ever."""

    label: str  # the group's label, as written
    months: int
    last: LastResult | None
    unplaced: int = 0  # results of the group whose date cannot be read or is after today
    concepts: tuple[str, ...] = field(default=(), compare=False)  # the group's tests, by name


@dataclass(frozen=True)
class MedicationOrder:
    name: str  # as ordered
    class_label: str
    ingredient: str
    status: Any
    started: datetime | None
    how: str  # "RxNorm 83367", "matched by name" ...
    link_with_cramps: str | None  # the class's evidence
    source_kind: str = "order"  # "order" (MedicationRequest) or "statement" (taken, as recorded)
    drug_class: str = ""  # the class the rule matched it in (advice is per class)


Evidence = (
    CodedProblem
    | RecordedFinding
    | ProcedureDone
    | LabResult
    | FlaggedResult
    | UnusableResult
    | MissingResult
    | MedicationOrder
)


@dataclass(frozen=True)
class Fact:
    """One piece of evidence behind a card."""

    criterion: str = field(compare=False)
    evidence: Evidence
    sources: tuple[Resource, ...] = field(default=(), compare=False)  # the resources it rests on
    when: datetime | None = field(default=None, compare=False)
    order: str | None = field(default=None, compare=False)  # lab order for a missing result
    hidden: bool = field(default=False, compare=False)  # counts, not listed (``evidence``)
    # The fact's words, kept by ``render.evidence`` once made: a card's detail and its
    # fingerprint both word every fact, and the engine never reads this.
    wording: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)

    def as_hidden(self) -> Fact:
        """The same fact, counted but not listed (``dataclasses.replace`` costs 3x more)."""
        return Fact(self.criterion, self.evidence, self.sources, self.when, self.order, True)

    @cached_property
    def references(self) -> tuple[str, ...]:
        """``Type/id`` of each source with an id (the card's reasons and its fingerprint)."""
        return tuple(ref for ref in map(reference_to, self.sources) if ref)

    @property
    def name(self) -> str:
        """What the evidence is called (a display, a medicine's name, a test's label): the
        first words of its line on the card, by which same-day facts are ordered."""
        evidence = self.evidence
        if isinstance(evidence, CodedProblem | RecordedFinding | ProcedureDone):
            return evidence.code.display
        if isinstance(evidence, MedicationOrder):
            return evidence.name
        if isinstance(evidence, MissingResult):
            return evidence.label
        return evidence.concept.label

    @property
    def item(self) -> str:
        """What the fact is about, for keeping one fact per item: the coded problem's
        display, the medicine's ingredient (problem lists and orders repeat entries)."""
        evidence = self.evidence
        if isinstance(evidence, CodedProblem | RecordedFinding):
            return evidence.code.display
        if isinstance(evidence, MedicationOrder):
            return evidence.ingredient
        return repr(evidence)


@dataclass(frozen=True)
class Found:
    """A result a threshold is compared with: the value in the concept's unit, and how it
    was derived from what was recorded."""

    when: datetime
    value: float
    resource: Resource
    code: Concept
    estimate: Estimate | None = None
    correction: Correction | None = None
    discordance: Discordance | None = None


@dataclass
class RouteResult:
    """One route's answer for one record: the facts of the rules that fired, most severe
    first, and what the card is made of."""

    route: Route
    facts: list[Fact]
    context: list[Fact]
    fired: list[str]
    indicator: str
    variant: Variant | None
    existing_referral: Resource | None
    # The next steps that fit this record (``engine.steps``); None: not chosen from a record
    # (``plan.chosen_steps``).
    chosen: list[Step] | None = None
    # What one plan for the patient kept of them (``engine.plan.compose``, which can be run
    # again, e.g. once a clinician's override has hidden a card); None: not composed yet.
    steps: list[Step] | None = None
    superseded_by: list[str] = field(default_factory=list)  # titles of the cards that took steps

    @property
    def content(self) -> list[Content]:
        """The content blocks (next step, caveats, links) of each rule that fired."""
        seen: set[str] = set()
        blocks: list[Content] = []
        for criterion_id in self.fired:
            name = self.route.content_of.get(criterion_id)
            if name is not None and name not in seen:
                seen.add(name)
                blocks.append(self.route.content[name])
        return blocks
