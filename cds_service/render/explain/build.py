"""The page model of a route, built from the typed rule model (``engine.model``), once per
rule set (``pages.Explainer`` keeps the models); the rules that fired only mark a copy.
Text with no typed field (a route's ``why``, ``action`` and background caveats, a variant's
``action``, the gate's finding) is read from the rule files as written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cds_service.engine.criteria.missing import ObservationMissingCriterion
from cds_service.engine.fhir_status import REFERRAL_OPEN
from cds_service.render.explain.citations import public
from cds_service.render.explain.codes import code_of, concept_words
from cds_service.render.explain.model import (
    Gate,
    LevelData,
    LinkData,
    RouteExplanation,
    RuleExplanation,
    SharedExplanation,
    SharedUse,
    SourceAttributes,
    VariantExplanation,
)
from cds_service.render.explain.names import inner, rule_name
from cds_service.render.explain.steps import next_steps
from cds_service.render.explain.urls import clean_rule_ids
from cds_service.render.explain.wording import criterion_words, join

if TYPE_CHECKING:
    from cds_service.engine.criteria.base import Criterion
    from cds_service.engine.model import Link, Referral, Route, RuleSet

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
# Keys of a rule file entry that the pages turn into words; any other key a criterion carries
# is listed as is, so a new rule-language feature is never silently left off the review pages.
KNOWN_KEYS = frozenset(
    "id type finding fires context indicator unless note value_sets recent_days undated "
    "also_observations lookback_days concept threshold estimate estimate_from statuses "
    "aggregate ages critical_flags discordance_margin groups classes started_on_or_after "
    "of when content evidence evidence_level persisting_days sustained_days report title".split()
)
MISSING = "not declared in cards/common.yaml"


def clean(text: object) -> str | None:
    """Text read as written, on one line, citing only what a reader can open."""
    return public(" ".join(str(text).split())) if text else None


def links_of(links: Iterable[Link]) -> list[LinkData]:
    return [{"label": link.label, "url": link.url} for link in links]


def rule_content(
    route: Route, criterion: Criterion, ruleset: RuleSet
) -> tuple[str | None, list[str], list[LinkData]]:
    """A rule's next step, caveats and links: the route's content block it names."""
    name = route.content_of.get(criterion.id)
    block = route.content.get(name) if name is not None else None
    if block is None:
        return None, [], []
    caveats = [t for c in block.caveats if (t := clean(c))]
    return clean(next_steps(block, route, ruleset)), caveats, links_of(block.links)


def evidence_level(route: Route, criterion: Criterion) -> LevelData | None:
    """The rule's evidence level and source: its own, or its content block's."""
    found = criterion.evidence_level
    name = route.content_of.get(criterion.id)
    if found is None and name is not None and name in route.content:
        found = route.content[name].evidence_level
    if found is None:
        return None
    level, source = clean(found.level), clean(found.source)
    return {"level": level, "source": source} if level and source else None


def role_of(criterion: Criterion) -> str:
    if criterion.context:
        return "context"
    return "fires" if criterion.fires else "building block"


def _extra_details(criterion: Criterion, route: Route) -> list[str]:
    """What every criterion may add: unknown settings, how its evidence is listed."""
    # Unknown keys have no typed field by definition: listed as written.
    details = [
        f"Setting {key}: {criterion.spec[key]}." for key in sorted(set(criterion.spec) - KNOWN_KEYS)
    ]
    if criterion.evidence == "hidden":
        details.append("Its facts count for the rules that use it but are not listed.")
    elif criterion.evidence == "newest":
        details.append("Only its newest fact is listed as evidence.")
    if isinstance(criterion, ObservationMissingCriterion) and criterion.report != "both":
        details.append(f"Reports only {criterion.report} results.")
    if criterion.unless:
        names = [inner(rule_name(route.criteria[u], route)) for u in criterion.unless]
        details.append(f"{UNLESS_WORDS}{join(names, 'or')}.")
    return details


def _used_by(route: Route) -> dict[str, list[str]]:
    used_by: dict[str, list[str]] = {}
    for c in route.criteria.values():
        anchor = getattr(c, "started_on_or_after", None)
        for ref in [*c.parts, *c.unless, *([anchor] if anchor else [])]:
            used_by.setdefault(ref, []).append(c.id)
    return used_by


def _variants(route: Route) -> list[VariantExplanation]:
    # A variant's action has no typed field: read as written (``Variant.index`` is its place).
    written = route.spec.get("variants", [])
    order = list(route.criteria)
    return [
        VariantExplanation(
            index=i,
            when=sorted(v.when, key=order.index),
            only=v.only,
            summary=v.summary,
            action=clean(written[v.index].get("action")) if v.index < len(written) else None,
            referral_label=v.referral_label,
            priority=v.priority,
            no_referral=v.no_referral,
        )
        for i, v in enumerate(route.variants)
    ]


def _rule(
    route: Route,
    criterion: Criterion,
    ruleset: RuleSet,
    used_by: list[str],
    variants: list[int],
    uses: dict[str, list[SharedUse]],
) -> RuleExplanation:
    words = criterion_words(criterion, route, ruleset)
    role = role_of(criterion)
    type_name = type(criterion).type_name
    next_step, caveats, links = rule_content(route, criterion, ruleset)
    own = _extra_details(criterion, route)
    shared = ruleset.shared_criteria.get(criterion.id) if criterion.id in route.shared else None
    return RuleExplanation(
        id=criterion.id,
        type=type_name,
        type_words=TYPE_WORDS.get(type_name, type_name),
        role=role,
        indicator=(criterion.indicator or route.indicator) if role == "fires" else None,
        when=words.when,
        details=words.details + own,
        general=words.general,
        reads=words.reads,
        parts=list(criterion.parts),
        unless=list(criterion.unless),
        used_by=used_by,
        variants=variants,
        next_step=next_step,
        caveats=caveats,
        links=links,
        # ``finding`` (an older spelling of the note) has no typed field: read as written.
        note=clean(criterion.note) or clean(criterion.spec.get("finding")),
        evidence_level=evidence_level(route, criterion) if role == "fires" else None,
        shared_file=shared.file if shared else None,
        shared_with=[u.text for u in uses.get(criterion.id, []) if u.route != route.code],
        own_details=own,
        name=rule_name(criterion, route),
    )


def shared_uses(ruleset: RuleSet) -> dict[str, list[SharedUse]]:
    """Every route's rule that uses each shared criterion, in route order."""
    uses: dict[str, list[SharedUse]] = {}
    for route in ruleset.routes:
        for criterion in route.criteria.values():
            if criterion.id in route.shared:
                use = SharedUse(route.code, criterion.id, role_of(criterion), route.title)
                uses.setdefault(criterion.id, []).append(use)
    return uses


def explain_shared(ruleset: RuleSet) -> list[SharedExplanation]:
    """Each shared criterion once, in words (as its first user compiles it: a route adds
    no part of the definition), with every rule that uses it."""
    uses = shared_uses(ruleset)
    routes = {route.code: route for route in ruleset.routes}
    found: list[SharedExplanation] = []
    for shared in ruleset.shared_criteria.values():
        users = uses.get(shared.id, [])
        if not users:  # defined, used by no route: nothing the service reads (no name)
            found.append(
                SharedExplanation(shared.id, shared.file, "unused", "used by no rule", [], [], [])
            )
            continue
        route = routes[users[0].route]
        criterion = route.criteria[shared.id]
        words = criterion_words(criterion, route, ruleset)
        type_name = type(criterion).type_name
        found.append(
            SharedExplanation(
                id=shared.id,
                file=shared.file,
                type_words=TYPE_WORDS.get(type_name, type_name),
                when=words.when,
                details=words.details,
                reads=words.reads,
                users=users,
                name=rule_name(criterion, route),
            )
        )
    return found


def explain_route(route: Route, ruleset: RuleSet, fired: Iterable[str] = ()) -> RouteExplanation:
    """The plain-words model of one route; ``fired``: rule ids to highlight (others ignored)."""
    used_by = _used_by(route)
    variants = _variants(route)
    uses = shared_uses(ruleset)
    rules = [
        _rule(
            route,
            criterion,
            ruleset,
            used_by.get(criterion.id, []),
            [v.index for v in variants if criterion.id in v.when],
            uses,
        )
        for criterion in route.criteria.values()
    ]
    # The route's why, action and background caveats have no typed field: read as written.
    data = route.spec
    referral = route.referral
    model = RouteExplanation(
        code=route.code,
        title=route.title,
        indicator=route.indicator,
        why=clean(data.get("why")) or "",
        action=clean(data.get("action")) or "",
        summary=route.summary,
        referral=(
            f"{concept_words(referral.code)}, suggested as '{referral.label}'" if referral else None
        ),
        referral_priority=referral.priority if referral else None,
        referral_recognised=_recognised(referral, ruleset) if referral else None,
        orders=[concept_words(order.code) for order in route.orders.values()],
        caveats=[t for c in data.get("caveats", []) if (t := clean(c))],
        links=links_of(route.links),
        variants=variants,
        rules=rules,
        source_file=route.source_file,
    )
    return model.with_fired(set(clean_rule_ids(fired)) & set(route.criteria))


def _recognised(referral: Referral, ruleset: RuleSet) -> str:
    codes = [concept_words(c) for c in (referral.code, *referral.also)]
    text = (
        f"An open ({join(sorted(REFERRAL_OPEN), 'or')}) referral already on record replaces "
        f"the suggestion: "
        f"one coded {join(codes, 'or')}"
    )
    if referral.words and ruleset.referral_words:
        text += (
            f", or one whose text or display names {join(list(referral.words), 'or')} and "
            f"says {join(list(ruleset.referral_words), 'or')} (whole words, any case)"
        )
        others = [str(o) for o in ruleset.spec.get("referral_other_specialties") or []]
        if referral.elsewhere:
            text += (
                ", and names no other specialty (another route's words"
                + (f", or {join(others, 'or')}" if others else "")
                + "), so that an order or another specialist's referral is never taken for "
                "this one: a duplicate is offered rather than a needed referral withheld"
            )
    return text + "."


def source_attributes(
    ruleset: RuleSet, content_hash: str, routes: list[Route] | None = None
) -> SourceAttributes:
    """ONC HTI-1 source attributes: ``source_attributes`` of common.yaml, the routes' links."""
    block = ruleset.source_attributes or {}
    citation = block.get("citation") or {}
    seen: dict[str, LinkData] = {}
    for route in routes if routes is not None else ruleset.routes:
        for link in links_of(route.links):
            seen.setdefault(link["url"], link)
        for criterion in route.criteria.values():
            for link in rule_content(route, criterion, ruleset)[2]:
                seen.setdefault(link["url"], link)
    return SourceAttributes(
        version=str(block.get("version", MISSING)),
        content_hash=content_hash,
        developer=clean(block.get("developer")) or MISSING,
        funding_source=clean(block.get("funding_source")) or MISSING,
        release_date=str(block.get("release_date", MISSING)),
        revision_date=str(block["revision_date"]) if block.get("revision_date") else None,
        citation_title=citation.get("title", MISSING),
        citation_note=clean(citation.get("note")),
        citation_url=citation.get("url"),
        links=list(seen.values()),
    )


def gate(ruleset: RuleSet) -> Gate:
    # The gate's finding (its name in words) has no typed field: read as written.
    finding = ruleset.spec.get("gate", {}).get("finding", "Leg cramps")
    return Gate(finding, [code_of(c) for c in ruleset.gate.exact.values()])
