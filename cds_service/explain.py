"""Explanation pages: the loaded rules in plain words, for clinicians and clinical reviewers.

Every card links (type ``absolute``) to ``/explain/<route>?rules=<ids that fired>``; the same
pages with an index (``/explain``) are the rule catalogue for clinical review, and
``cds-service check-rules --explain`` prints the same content as text. Nothing here is
hand-written per route: each page is generated from the ``RuleSet`` loaded from ``cards/``.
No patient data ever reaches a URL or a page: the only input is a route code and rule ids,
and rule ids that the route does not define are dropped.

Layers: this module holds no Flask import (the HTTP layer in ``app.py`` serves the pages);
it builds a plain model (``RouteExplanation``, ``RuleExplanation``) that both the HTML
templates (``templates/explain/``, Jinja2 with autoescaping) and the text table read.

Source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv), evidence-based decision support
interventions: bibliographic citation, developer, funding source, release and revision
dates) come from ``source_attributes`` in ``cards/common.yaml`` plus each route's links;
the rule files' version is that block's ``version`` and a content hash of ``cards/``.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from cds_service.engine import units
from cds_service.engine.terminology import SHORT_NAMES
from cds_service.render.evidence import format_number

EXPLAIN_PATH = "/explain"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# As rules-route.json's $defs/id, and with at least one letter, so that no date or number
# (a birth date, a record number, a value) can pass for a rule id.
RULE_ID = re.compile(r"^(?=[a-z0-9-]*[a-z])[a-z0-9][a-z0-9-]{0,99}$")
MAX_RULE_IDS = 50

# The base URL of the request being served, set by the HTTP layer for the request's duration
# (``app.py``) so card rendering, which knows nothing of HTTP, can build absolute links.
REQUEST_BASE_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "explain_request_base_url", default=None
)

COMPARATORS = {"<": "below", "<=": "at or below", ">": "above", ">=": "at or above"}
STATUS_DEFAULT = ("final", "amended", "corrected")
CONDITION_COUNTS = (
    "clinical status active, recurrence or relapse (or not stated), and not "
    "refuted or entered in error"
)
FLAG_WORDS = {"LL": "critically low", "HH": "critically high", "AA": "critically abnormal"}
TYPE_WORDS = {
    "condition": "problem on record",
    "observation": "laboratory or vital-sign result",
    "observation-missing": "tests not done",
    "procedure": "procedure performed",
    "medication": "medicine on record",
    "all": "combination (all of)",
    "any": "combination (any of)",
}
UNLESS_WORDS = "Unless any of these holds: "
GENERAL_RULES = (
    f"Problems count only with {CONDITION_COUNTS}.",
    "For a lab rule the newest result in its window decides (unless the rule says highest or "
    "lowest); only final, amended or corrected results count unless the rule lists others.",
    "A result counts only as a number in a convertible unit within the concept's plausible "
    "range; one that cannot be read or is implausible is shown for review, never used.",
    "Medicines are matched by RxNorm code or by name; every rule needs a leg-cramp problem on "
    "record, and a deceased patient gets no cards.",
)
# Keys this module turns into words; any other key a criterion carries is listed as is, so a
# new rule-language feature is never silently left off the review pages.
KNOWN_KEYS = {
    "id",
    "type",
    "finding",
    "fires",
    "context",
    "indicator",
    "unless",
    "note",
    "value_sets",
    "undated",
    "also_observations",
    "lookback_days",
    "concept",
    "threshold",
    "estimate",
    "estimate_from",
    "statuses",
    "aggregate",
    "ages",
    "critical_flags",
    "discordance_margin",
    "groups",
    "classes",
    "started_on_or_after",
    "of",
    "next_step",
    "caveats",
    "links",
    "content",
    "evidence",
    "persisting_days",
    "sustained_days",
    "report",
}


# --------------------------------------------------------------------------- URLs


def base_url(settings=None) -> str:
    """The service's public base URL, without a trailing slash.

    ``CDS_PUBLIC_BASE_URL`` when set; else the URL of the request being served (set by the
    HTTP layer); else, outside any request (``cds-service evaluate``), the configured
    ``CDS_HOST``/``CDS_PORT`` (a wildcard host such as 0.0.0.0 becomes 127.0.0.1), and
    http://127.0.0.1:8080 when the settings cannot be read.
    """
    if settings is None:
        from cds_service.config import ConfigError, Settings

        try:
            settings = Settings.from_env()
        except ConfigError:
            settings = None
    if settings is not None and settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    current = REQUEST_BASE_URL.get()
    if current:
        return current.rstrip("/")
    if settings is None:
        return DEFAULT_BASE_URL
    host = settings.host if settings.host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{settings.port}"


def clean_rule_ids(rule_ids: Iterable[str] | str | None) -> list[str]:
    """Rule ids as they may appear in a URL: the id pattern only, each once, in order.

    Anything else (a value, a name, free text) is dropped, so no patient data can be
    carried into an explanation link even by mistake."""
    if rule_ids is None:
        return []
    if isinstance(rule_ids, str):
        rule_ids = rule_ids.split(",")
    seen: dict[str, None] = {}
    for rule_id in rule_ids:
        rule_id = str(rule_id).strip()
        if RULE_ID.match(rule_id) and len(seen) < MAX_RULE_IDS:
            seen.setdefault(rule_id, None)
    return list(seen)


def explain_url(base_url: str, route_code: str, rule_ids: Iterable[str] = ()) -> str:
    """Absolute URL of the explanation page of a route, the rules that fired first.

    >>> explain_url("https://cds.example.org/", "nephrology", ["egfr-below-30-known-ckd"])
    'https://cds.example.org/explain/nephrology?rules=egfr-below-30-known-ckd'

    ``base_url`` empty: http://127.0.0.1:8080. Rule ids that are not ids are dropped.
    """
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}{EXPLAIN_PATH}/{quote(route_code, safe='')}"
    ids = clean_rule_ids(rule_ids)
    return f"{url}?rules={','.join(ids)}" if ids else url


def explain_link(
    route_code: str,
    rule_ids: Iterable[str] = (),
    settings=None,
    label: str = "Why this card: the rules explained",
) -> dict:
    """A CDS Hooks card link to the explanation page (``base_url(settings)``)."""
    return {
        "label": label,
        "url": explain_url(base_url(settings), route_code, rule_ids),
        "type": "absolute",
    }


# --------------------------------------------------------------------------- version


def rules_hash(cards_dir: Path) -> str:
    """SHA-256 over every rule file under ``cards_dir`` (names and bytes), first 12 hex."""
    digest = hashlib.sha256()
    root = Path(cards_dir)
    for path in sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
    ):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------- the model


@dataclass
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
    links: list[dict] = field(default_factory=list)
    note: str | None = None
    fired: bool = False  # named in ?rules= (highlighted, listed first)
    # {"level", "source"} of the rule's recommendation, from the rule files; "not graded"
    # where the references give no grade.
    evidence_level: dict | None = None

    @property
    def role_words(self) -> str:
        return {
            "fires": "makes the card",
            "building block": "building block: used by other rules, never a card alone",
            "context": "context: shown on the card when present, never a card alone",
        }[self.role]


@dataclass
class VariantExplanation:
    index: int
    when: list[str]
    only: bool
    summary: str | None
    action: str | None
    referral_label: str | None
    priority: str | None
    no_referral: bool

    @property
    def when_words(self) -> str:
        ids = ", ".join(self.when)
        if self.only:
            return f"when the only rules that fired are among: {ids}"
        return f"when any of these fired: {ids}"


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
    orders: list[str]
    caveats: list[str]
    links: list[dict]
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


# --------------------------------------------------------------------------- words


def _short_system(system: str) -> str:
    return SHORT_NAMES.get(system, system)


def _days(days: int) -> str:
    if days % 365 == 0:
        years = days // 365
        return f"{days} days ({years} year{'s' if years > 1 else ''})"
    if days in (30, 31):
        return f"{days} days (1 month)"
    if days % 30 == 0 or days % 31 == 0 or days == 90:
        return f"{days} days (about {round(days / 30.4)} months)"
    return f"{days} day{'s' if days != 1 else ''}"


def _unit(unit: str) -> str:
    return units.display_label(unit)


def _join(items: list[str], last: str = "and") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def _statuses(criterion: dict) -> tuple[str, ...]:
    return tuple(criterion.get("statuses", STATUS_DEFAULT))


def threshold_words(criterion: dict, concept) -> str:
    """'below 3.5 mmol/L' (and the display unit when it differs: 'below 0.7 mmol/L (1.7 mg/dL)')."""
    threshold = criterion["threshold"]
    comparator = threshold["comparator"]
    words = COMPARATORS.get(comparator, comparator)
    text = (
        f"{words} ({comparator}) {format_number(threshold['value'], 3)} "
        f"{_unit(threshold['unit'])}".rstrip()
    )
    if concept is not None and concept.display_unit != threshold["unit"]:
        shown = units.convert(
            threshold["value"],
            threshold["unit"],
            concept.display_unit,
            molar_mass=concept.molar_mass,
            valence=concept.valence,
            scale=concept.scale,
        )
        if shown is not None:
            text += (
                f" ({format_number(shown, concept.decimals)} "
                f"{_unit(concept.display_unit)})".replace(" )", ")")
            )
    return text


def _value_set_list(route, name: str) -> CodeList:
    value_set = route.value_sets.get(name)
    codes = []
    if value_set is not None:
        codes = [Code(_short_system(c.system), c.code, c.display) for c in value_set.exact.values()]
        codes += [
            Code(_short_system(c.system), c.code, c.display, prefix=True)
            for c in value_set.prefixes
        ]
    return CodeList("value set", name, name.replace("-", " "), codes)


def _concept_list(ruleset, name: str) -> CodeList:
    concept = ruleset.concepts[name]
    codes = [
        Code(_short_system(c.system), c.code, c.display) for c in concept.value_set.exact.values()
    ]
    facts = [
        f"read in {_unit(concept.unit) or 'no unit (a ratio)'}"
        + (
            f", shown in {_unit(concept.display_unit)}"
            if concept.display_unit != concept.unit
            else ""
        )
        + "; results in other units are converted by their UCUM unit, never guessed"
    ]
    if concept.plausible is not None:
        low, high = concept.plausible
        facts.append(
            f"plausible range {format_number(low, 3)}-{format_number(high, 3)} "
            f"{_unit(concept.unit)}".rstrip()
            + ": a result outside it is shown as implausible and never used"
        )
    if concept.unitless:
        facts.append("a result sent without any unit is read as a ratio")
    if concept.paired_within == "day":
        facts.append("results of the same calendar day are read together; the lowest counts")
    if concept.correction:
        c = concept.correction
        facts.append(
            f"with an albumin below {format_number(c['applies_below'], 2)} g/dL of the "
            f"same day or the day before, the corrected value is used: measured + "
            f"{format_number(c['factor'], 2)} x ({format_number(c['reference'], 2)} - "
            "albumin g/dL)"
        )
    spec = ruleset.spec.get("observations", {}).get(name, {})
    if spec.get("note"):
        facts.append(" ".join(spec["note"].split()))
    return CodeList("lab concept", name, concept.label, codes, facts)


def _medication_lists(route, classes: list[str]) -> list[CodeList]:
    by_class = route.medications.specs if route.medications else {}
    lists = []
    for name in classes:
        spec = by_class.get(name)
        if spec is None:
            lists.append(CodeList("medication class", name, name))
            continue
        codes, facts, more = [], [], 0
        for ingredient in spec["ingredients"]:
            names = ingredient.get("names", [])
            if "code" in ingredient:
                unverified = (
                    " (code unverified)" if ingredient.get("status") == "unverified" else ""
                )
                codes.append(
                    Code(
                        "RxNorm",
                        str(ingredient["code"]),
                        ingredient["display"]
                        + unverified
                        + (f"; also by name: {', '.join(names)}" if names else ""),
                    )
                )
            else:
                facts.append(
                    f"{ingredient['display']}: matched by name"
                    + (f" ({', '.join(names)})" if names else "")
                    + ", no verified RxNorm code"
                )
            more += len(ingredient.get("products", []))
        if spec.get("evidence"):
            facts.append(f"evidence of association: {spec['evidence']}")
        if spec.get("note"):
            facts.append(spec["note"])
        if more:
            facts.append(f"plus {more} RxNorm product codes containing these ingredients")
        lists.append(
            CodeList("medication class", name, spec.get("label", name), codes, facts, more)
        )
    return lists


def _content(route, criterion: dict) -> tuple[str | None, list[str], list[dict]]:
    """A rule's own next step, caveats and links: on the criterion itself, or in the route's
    ``content`` block that the criterion names (``content: <name>``)."""
    block: dict = {}
    name = criterion.get("content")
    if isinstance(name, str):
        block = route.spec.get("content", {}).get(name, {}) or {}
    next_step = criterion.get("next_step", block.get("next_step"))
    caveats = list(criterion.get("caveats", block.get("caveats", [])) or [])
    links = [
        link
        for link in (criterion.get("links", block.get("links", [])) or [])
        if isinstance(link, dict) and "url" in link
    ]
    return _clean(next_step), [t for c in caveats if (t := _clean(c))], links


def _evidence_level(route, criterion: dict) -> dict | None:
    """The rule's evidence level and source: on the criterion itself, or on the content
    block it names (the schema requires one on every block)."""
    found = criterion.get("evidence_level")
    name = criterion.get("content")
    if found is None and isinstance(name, str):
        found = (route.spec.get("content", {}).get(name) or {}).get("evidence_level")
    if not isinstance(found, dict):
        return None
    level, source = _clean(found.get("level")), _clean(found.get("source"))
    return {"level": level, "source": source} if level and source else None


def _when(criterion: dict, route, ruleset) -> tuple[str, list[str], list[str], list[CodeList]]:
    """(one sentence, details, general data rules, what it reads) for one criterion."""
    kind = criterion["type"]
    details: list[str] = []  # what is particular to this rule
    general: list[str] = []  # the data rules every rule of its type follows
    reads: list[CodeList] = []
    if kind in ("condition", "procedure"):
        names = criterion["value_sets"]
        reads = [_value_set_list(route, n) for n in names]
        sets = _join([f"'{n}'" for n in names], "or")
        if kind == "condition":
            what = "an active problem (Condition)"
            if criterion.get("also_observations"):
                what += " or a finding recorded as an Observation"
            when = f"The record holds {what} coded in value set {sets}"
            if criterion.get("lookback_days"):
                when += (
                    f", with its onset or recorded date in the last "
                    f"{_days(criterion['lookback_days'])}"
                )
            if criterion.get("persisting_days"):
                when += f", that began at least {_days(criterion['persisting_days'])} ago"
            when += "."
            general.append(f"Counts only problems with {CONDITION_COUNTS}.")
            if criterion.get("also_observations"):
                details.append(
                    "Findings recorded as Observations count when final, amended, "
                    "corrected or preliminary."
                )
            if criterion.get("undated") == "recent":
                details.append(
                    "A problem with no onset or recorded date counts as recent, and "
                    "the card says the date is missing."
                )
            elif criterion.get("lookback_days"):
                details.append("A problem with no usable date does not count.")
        else:
            when = (
                f"A completed procedure coded in value set {sets} was performed in the last "
                f"{_days(criterion['lookback_days'])}."
            )
    elif kind == "observation":
        concept = ruleset.concepts.get(criterion["concept"])
        label = concept.label if concept else criterion["concept"]
        reads = [_concept_list(ruleset, criterion["concept"])] if concept else []
        pick = {"max": "highest", "min": "lowest"}.get(str(criterion.get("aggregate")), "newest")
        when = (
            f"The {pick} {label} result of the last {_days(criterion['lookback_days'])} is "
            f"{threshold_words(criterion, concept)}."
        )
        if pick == "newest":
            general.append(
                "The newest result decides: an older result never stands in for a "
                "newer one that cannot be read."
            )
        else:
            details.append(f"The {pick} result in the window decides, not the latest.")
        (details if "statuses" in criterion else general).append(
            f"Result statuses counted: {_join(list(_statuses(criterion)), 'or')}."
        )
        ages = criterion.get("ages") or {}
        if "from" in ages:
            details.append(
                f"Only for patients aged {format_number(ages['from'], 1)} or over "
                "today (an unknown age counts)."
            )
        if "below" in ages:
            details.append(
                f"Only for patients under {format_number(ages['below'], 1)} today "
                "(an unknown age does not count)."
            )
        if criterion.get("estimate") == "ckd-epi-2021":
            source = criterion.get("estimate_from", "creatinine")
            margin = criterion.get("discordance_margin", 0.3)
            details.append(
                f"Without a newer reported {label}, it is estimated with CKD-EPI 2021 "
                f"from {source} (adults with age and sex recorded), marked as "
                f"estimated; when a same-day reported and estimated value differ by "
                f"more than {round(margin * 100)} %, the lower one is used and both "
                "are shown."
            )
            if source in ruleset.concepts:
                reads.append(_concept_list(ruleset, source))
        if criterion.get("critical_flags"):
            flags = _join(
                [f"{f} ({FLAG_WORDS.get(f, f)})" for f in criterion["critical_flags"]], "or"
            )
            details.append(
                f"A newest result flagged {flags} by the laboratory with no readable "
                "number also counts."
            )
        if criterion.get("sustained_days"):
            details.append(
                f"Sustained: an earlier result at least "
                f"{_days(criterion['sustained_days'])} before also meets the "
                "threshold."
            )
    elif kind == "observation-missing":
        groups = criterion["groups"]
        parts = []
        for group in groups:
            part = f"{group['label']} (none usable in {_days(group['lookback_days'])})"
            parts.append(part)
            for name in group["concepts"]:
                if name in ruleset.concepts and all(r.name != name for r in reads):
                    reads.append(_concept_list(ruleset, name))
            order = route.spec.get("orders", {}).get(group.get("order"))
            if order:
                details.append(
                    f"Missing {group['label']}: offers to order {order['display']} "
                    f"({_short_system_name(order['system'])} {order['code']})."
                )
        when = f"At least one of these tests has no usable result in its window: {_join(parts)}."
        general.append(
            "A result that cannot be read (no value, unknown unit) or is implausible "
            "is listed for review, never counted as done."
        )
        (details if "statuses" in criterion else general).append(
            f"Result statuses counted: {_join(list(_statuses(criterion)), 'or')}."
        )
    elif kind == "medication":
        reads = _medication_lists(route, criterion["classes"])
        labels = _join([r.label for r in reads], "or")
        when = f"An active medication order or statement is on record for a medicine in: {labels}."
        general.append(
            "Medicines match by RxNorm ingredient or product code, or by ingredient "
            "or brand name in the text (a close misspelling too, marked as such)."
        )
        anchor = criterion.get("started_on_or_after")
        if anchor:
            details.append(
                f"Only medicines ordered on or after the date of the evidence of rule {anchor}."
            )
    elif kind in ("all", "any"):
        parts = criterion["of"]
        if kind == "all":
            when = (
                f"Rule {parts[0]} holds."
                if len(parts) == 1
                else f"All of these rules hold: {_join(parts)}."
            )
        else:
            when = f"Any of these rules holds: {_join(parts, 'or')}."
    else:
        when = f"A criterion of type {kind}."
    for key in sorted(set(criterion) - KNOWN_KEYS):
        details.append(f"Setting {key}: {criterion[key]}.")
    if criterion.get("evidence") == "hidden":
        details.append("Its facts count for the rules that use it but are not listed.")
    elif criterion.get("evidence") == "newest":
        details.append("Only its newest fact is listed as evidence.")
    if criterion.get("report") in ("missing", "unusable"):
        details.append(f"Reports only {criterion['report']} results.")
    return when, details, general, reads


def _short_system_name(system: str) -> str:
    from cds_service.engine.terminology import canonical_system

    return _short_system(canonical_system(system) or system)


def _specs(route) -> list[dict]:
    """Each criterion as written, with its type and role made explicit (a ``when:`` rule is
    an ``all``; building blocks never fire)."""
    return [
        {
            **c.spec,
            "type": type(c).type_name,
            "of": list(c.parts),
            "fires": c.fires,
            **({"lookback_days": c.window.days} if c.window is not None else {}),
        }
        for c in route.criteria.values()
    ]


def explain_route(route, ruleset, fired: Iterable[str] = ()) -> RouteExplanation:
    """The plain-words model of one route; ``fired``: rule ids to highlight (others ignored)."""
    data = route.spec
    fired_ids = set(clean_rule_ids(fired)) & set(route.criteria)
    used_by: dict[str, list[str]] = {}
    for c in _specs(route):
        for ref in list(c.get("of", [])) + list(c.get("unless", [])):
            used_by.setdefault(ref, []).append(c["id"])
        if c.get("started_on_or_after"):
            used_by.setdefault(c["started_on_or_after"], []).append(c["id"])
    variants = [
        VariantExplanation(
            i,
            list(v["when"]),
            bool(v.get("only")),
            v.get("summary"),
            _clean(v.get("action")),
            v.get("referral_label"),
            v.get("priority"),
            bool(v.get("no_referral")),
        )
        for i, v in enumerate(data.get("variants", []))
    ]
    rules = []
    for criterion in _specs(route):
        when, details, general, reads = _when(criterion, route, ruleset)
        unless = list(criterion.get("unless", []))
        if unless:
            details.append(f"{UNLESS_WORDS}{_join(unless, 'or')}.")
        role = (
            "context"
            if criterion.get("context")
            else "fires"
            if criterion.get("fires", True)
            else "building block"
        )
        next_step, caveats, links = _content(route, criterion)
        rules.append(
            RuleExplanation(
                id=criterion["id"],
                type=criterion["type"],
                type_words=TYPE_WORDS.get(criterion["type"], criterion["type"]),
                role=role,
                indicator=(
                    criterion.get("indicator", route.indicator) if role == "fires" else None
                ),
                when=when,
                details=details,
                general=general,
                reads=reads,
                parts=list(criterion.get("of", [])),
                unless=unless,
                used_by=used_by.get(criterion["id"], []),
                variants=[v.index for v in variants if criterion["id"] in v.when],
                next_step=next_step,
                caveats=caveats,
                links=links,
                note=_clean(criterion.get("note")) or _clean(criterion.get("finding")),
                fired=criterion["id"] in fired_ids,
                evidence_level=_evidence_level(route, criterion) if role == "fires" else None,
            )
        )
    referral = data.get("referral")
    orders = [
        f"{o['display']} ({_short_system_name(o['system'])} {o['code']})"
        for o in data.get("orders", {}).values()
    ]
    return RouteExplanation(
        code=route.code,
        title=route.title,
        indicator=route.indicator,
        why=_clean(data.get("why")) or "",
        action=_clean(data.get("action")) or "",
        summary=data.get("summary", ""),
        referral=(
            f"{referral['code']['display']} ({_short_system_name(referral['code']['system'])}"
            f" {referral['code']['code']}), suggested as '{referral['label']}'"
            if referral
            else None
        ),
        referral_priority=referral.get("priority") if referral else None,
        orders=orders,
        caveats=[t for c in data.get("caveats", []) if (t := _clean(c))],
        links=[link for link in data.get("links", []) if "url" in link],
        variants=variants,
        rules=rules,
        source_file=route.source_file,
    )


def _clean(text: object) -> str | None:
    return " ".join(str(text).split()) if text else None


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
    links: list[dict]  # the routes' links: the evidence each route cites


def source_attributes(ruleset, content_hash: str, routes: list | None = None) -> SourceAttributes:
    block = ruleset.spec.get("source_attributes") or {}
    citation = block.get("citation") or {}
    seen: dict[str, dict] = {}
    for route in routes if routes is not None else ruleset.routes:
        for link in route.spec.get("links", []):
            seen.setdefault(link["url"], link)
        for criterion in _specs(route):
            for link in _content(route, criterion)[2]:
                seen.setdefault(link["url"], link)
    missing = "not declared in cards/common.yaml"
    return SourceAttributes(
        version=str(block.get("version", missing)),
        content_hash=content_hash,
        developer=_clean(block.get("developer")) or missing,
        funding_source=_clean(block.get("funding_source")) or missing,
        release_date=str(block.get("release_date", missing)),
        revision_date=str(block["revision_date"]) if block.get("revision_date") else None,
        citation_title=citation.get("title", missing),
        citation_note=_clean(citation.get("note")),
        citation_url=citation.get("url"),
        links=list(seen.values()),
    )


# --------------------------------------------------------------------------- the pages


class Explainer:
    """Renders the pages and the text table from one loaded ``RuleSet``."""

    def __init__(self, ruleset, cards_dir: Path):
        from jinja2 import Environment, PackageLoader, select_autoescape

        self.ruleset = ruleset
        self.content_hash = rules_hash(cards_dir)
        self.routes = {route.code: route for route in ruleset.routes}
        self.env = Environment(
            loader=PackageLoader("cds_service", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._index: str | None = None
        # Pages depend only on the route and the (known) rule ids that fired: remembered.
        self._route_page = lru_cache(maxsize=512)(self._render_route)

    def route(self, code: str):
        return self.routes.get(code)

    def index_html(self) -> str:
        if self._index is None:
            self._index = self._render_index()
        return self._index

    def route_html(self, code: str, fired: Iterable[str] | str = ()) -> str | None:
        """The route's page (None: no such route); unknown rule ids are ignored."""
        route = self.routes.get(code)
        if route is None:
            return None
        ids = tuple(sorted(set(clean_rule_ids(fired)) & set(route.criteria)))
        return self._route_page(code, ids)

    def _render_index(self) -> str:
        routes = [explain_route(r, self.ruleset) for r in self.ruleset.routes]
        return self.env.get_template("explain/index.html").render(
            routes=routes,
            source=source_attributes(self.ruleset, self.content_hash),
            gate=self._gate(),
            base=EXPLAIN_PATH,
        )

    def _render_route(self, code: str, fired: tuple[str, ...]) -> str:
        route = self.routes[code]
        explanation = explain_route(route, self.ruleset, fired)
        return self.env.get_template("explain/route.html").render(
            route=explanation,
            source=source_attributes(self.ruleset, self.content_hash, [route]),
            gate=self._gate(),
            base=EXPLAIN_PATH,
            fired=[r for r in explanation.rules if r.fired],
        )

    def _gate(self) -> dict:
        gate = self.ruleset.spec.get("gate", {})
        codes = [
            Code(_short_system(c.system), c.code, c.display)
            for c in self.ruleset.gate.exact.values()
        ]
        return {"finding": gate.get("finding", "Leg cramps"), "codes": codes}

    def text(self) -> str:
        return decision_tables(self.ruleset, self.content_hash)


def decision_tables(ruleset, content_hash: str, width: int = 100) -> str:
    """Every route as a plain-language decision table (``check-rules --explain``)."""
    source = source_attributes(ruleset, content_hash)
    header = [
        f"Leg-cramp referral rules, version {source.version} (content {source.content_hash})",
        f"Developer: {source.developer}",
        f"Funding source: {source.funding_source}",
        f"Released {source.release_date}"
        + (f", revised {source.revision_date}" if source.revision_date else ""),
        f'Source: "{source.citation_title}" and the guidelines each route links.',
    ]
    out = [
        line for text in header for line in textwrap.wrap(text, width=width, subsequent_indent="  ")
    ] + [""]

    def para(prefix: str, text: str, indent: str = "      ") -> list[str]:
        return textwrap.wrap(
            text, width=width, initial_indent=prefix, subsequent_indent=indent
        ) or [prefix.rstrip()]

    def rule_details(rule: RuleExplanation) -> list[str]:
        lines = []
        for line in rule.details:
            if line.startswith(UNLESS_WORDS):
                lines += para("      UNLESS ", line[len(UNLESS_WORDS) :], "             ")
            else:
                lines += para("      - ", line, "        ")
        return lines

    out += para("Data rules every rule follows: ", " ".join(GENERAL_RULES), "  ")
    out.append("")
    for route in ruleset.routes:
        r = explain_route(route, ruleset)
        out.append("=" * width)
        out.append(f"{r.title} [{r.code}], indicator {r.indicator}  ({r.source_file})")
        out.append("=" * width)
        out += para("Why:  ", r.why or "")
        out += para("Who:  ", r.referral or "no referral; " + (r.action or ""))
        out.append("")
        out.append("IF (rule makes a card) ... THEN")
        for rule in r.firing:
            out += para(f"  [{rule.id}] ", rule.when, "      ")
            out += rule_details(rule)
            variant = next((v for v in r.variants if v.index in rule.variants), None)
            then = f"card {rule.indicator}"
            if variant is not None and variant.summary:
                then += f': "{variant.summary}"'
            elif r.summary:
                then += f': "{r.summary}"'
            out += para("      THEN ", then, "           ")
            if rule.next_step:
                out += para("      NEXT STEP ", rule.next_step, "           ")
            if rule.evidence_level:
                graded = f"{rule.evidence_level['level']} (source: {rule.evidence_level['source']})"
                out += para("      EVIDENCE ", graded, "           ")
        blocks = [rule for rule in r.rules if rule.role != "fires"]
        if blocks:
            out.append("")
            out.append("Building blocks (never a card on their own) and context:")
            for rule in blocks:
                out += para(f"  [{rule.id}] ", rule.when, "      ")
                out += rule_details(rule)
                if rule.used_by:
                    out += para("      used by ", ", ".join(rule.used_by), "              ")
        reads: dict = {}
        for rule in r.rules:
            for code_list in rule.reads:
                reads.setdefault((code_list.kind, code_list.name), code_list)
        if reads:
            out.append("")
            out.append("Codes read:")
            for code_list in reads.values():
                codes = "; ".join(c.text for c in code_list.codes)
                extra = f" (+{code_list.more} product codes)" if code_list.more else ""
                out += para(
                    f"  {code_list.kind} {code_list.name}: ",
                    (codes or "matched by name only") + extra,
                    "      ",
                )
        if r.variants:
            out.append("")
            out.append("Card wording variants (the first that applies wins):")
            for v in r.variants:
                out += para(
                    f"  {v.index + 1}. ",
                    f'{v.when_words}: "{v.summary or r.summary}"'
                    + (" (no referral offered)" if v.no_referral else ""),
                    "      ",
                )
        out.append("")
    return "\n".join(out).rstrip() + "\n"
