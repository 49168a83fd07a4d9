"""The page model: a route and its rules in plain words, built once per rule set.

The HTML templates and the text decision tables both read these; nothing here knows about
YAML, Jinja2 or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict


class LinkData(TypedDict):
    label: str
    url: str


class LevelData(TypedDict):
    level: str
    source: str


@dataclass(frozen=True)
class Code:
    system: str  # short name: SNOMED CT, ICD-10-CM, LOINC, RxNorm (or the URI)
    code: str
    display: str
    prefix: bool = False  # an ICD-10-CM code that matches its subcodes too

    @property
    def text(self) -> str:
        tail = " and its subcodes" if self.prefix else ""
        return f"{self.system} {self.code}{tail} {self.display}"


@dataclass
class CodeList:
    """What a rule reads: a value set, a lab concept, or a medication class."""

    kind: str  # "value set" | "lab concept" | "medication class"
    name: str
    label: str
    codes: list[Code] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # units, plausible range, notes, names
    more: int = 0  # codes not listed one by one (product codes)


@dataclass
class Wording:
    """What one criterion says: one sentence, its particulars and the data rules of its type."""

    when: str
    details: list[str] = field(default_factory=list)  # particular: ages, estimates, flags
    general: list[str] = field(default_factory=list)  # every rule of its type follows these
    reads: list[CodeList] = field(default_factory=list)


ROLE_WORDS = {
    "fires": "makes the card",
    "building block": "building block: used by other rules, never a card alone",
    "context": "context: shown on the card when present, never a card alone",
}


@dataclass
class RuleExplanation:
    id: str
    type: str
    type_words: str
    role: str  # "fires" | "building block" | "context"
    indicator: str | None
    when: str  # one sentence: what must be true
    details: list[str]  # particulars: ages, estimates, flags, exceptions
    general: list[str]  # data rules every rule of its type follows
    reads: list[CodeList]
    parts: list[str]  # ids combined by all/any
    unless: list[str]
    used_by: list[str]  # ids of the rules that combine this one
    variants: list[int]  # indexes of the variants it selects
    next_step: str | None = None
    caveats: list[str] = field(default_factory=list)
    links: list[LinkData] = field(default_factory=list)
    note: str | None = None
    fired: bool = False  # named in ?rules= (highlighted, listed first)
    # The level and source of the rule's recommendation, from the rule files; "not graded"
    # where the references give no grade.
    evidence_level: LevelData | None = None
    # Defined once in cards/shared/ (its file), and the other routes' rules that use it.
    shared_file: str | None = None
    shared_with: list[str] = field(default_factory=list)  # "Route title (role)"
    own_details: list[str] = field(default_factory=list)  # what this route adds (unless ...)
    name: str = ""  # its plain name (``names.rule_name``); the id is only a reference

    @property
    def role_words(self) -> str:
        return ROLE_WORDS[self.role]


@dataclass
class SharedExplanation:
    """A criterion defined once in cards/shared/, in words, with every rule that uses it."""

    id: str
    file: str
    type_words: str
    when: str
    details: list[str]
    reads: list[CodeList]
    users: list[SharedUse]
    name: str = ""


@dataclass(frozen=True)
class SharedUse:
    route: str  # route code
    rule: str  # rule id (the shared id: the id a card records)
    role: str  # "fires" | "building block" | "context"
    route_title: str = ""  # the route by name (the rule is the same definition everywhere)

    @property
    def text(self) -> str:
        return f"{self.route_title or self.route} ({ROLE_WORDS[self.role].split(':')[0]})"


@dataclass
class VariantExplanation:
    index: int  # place in precedence order (the first that applies wins)
    when: list[str]
    only: bool
    summary: str | None
    action: str | None
    referral_label: str | None
    priority: str | None
    no_referral: bool

    def when_words(self, names: dict[str, str] | None = None) -> str:
        """When it applies, the rules by name (``names``: id -> name), else by id."""
        rules = "; ".join((names or {}).get(i, i) for i in self.when)
        if self.only:
            return f"when the only rules that fired are among: {rules}"
        return f"when any of these fired: {rules}"


@dataclass
class RouteExplanation:
    code: str
    title: str
    indicator: str
    why: str
    action: str
    summary: str
    referral: str | None
    referral_priority: str | None
    # How an open referral already on record is recognised (then no second one is offered).
    referral_recognised: str | None
    orders: list[str]
    caveats: list[str]
    links: list[LinkData]
    variants: list[VariantExplanation]
    rules: list[RuleExplanation]
    source_file: str

    @property
    def by_id(self) -> dict[str, RuleExplanation]:
        return {r.id: r for r in self.rules}

    @property
    def firing(self) -> list[RuleExplanation]:
        return [r for r in self.rules if r.role == "fires"]

    def ordered(self) -> list[RuleExplanation]:
        """Rules that fired first, then the rest in file order."""
        return [r for r in self.rules if r.fired] + [r for r in self.rules if not r.fired]

    def with_fired(self, fired: set[str] | frozenset[str]) -> RouteExplanation:
        """A copy whose rules named in ``fired`` are marked (the cached model is unchanged)."""
        if not fired and not any(r.fired for r in self.rules):
            return self
        rules = [replace(r, fired=r.id in fired) for r in self.rules]
        return replace(self, rules=rules)


@dataclass
class SourceAttributes:
    version: str
    content_hash: str
    developer: str
    funding_source: str
    release_date: str
    revision_date: str | None
    citation_title: str
    citation_note: str | None
    citation_url: str | None
    links: list[LinkData]  # the routes' links: the evidence each route cites


@dataclass
class Gate:
    """The leg-cramp problem every route needs first."""

    finding: str
    codes: list[Code]
