"""Turn route results into CDS Hooks cards: summary, evidence, suggestion, links.

Wording comes from the route files; this module only assembles it in the shape the
CDS Hooks spec and ``design.md`` require (topic coding, ServiceRequest suggestion,
override reasons, no empty members).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from cds_service.engine import plan
from cds_service.engine.facts import Fact, RouteResult
from cds_service.engine.model import Link, RuleSet
from cds_service.engine.referrals import request_name
from cds_service.engine.terminology import Concept
from cds_service.render import evidence, explain, summary

if TYPE_CHECKING:
    from cds_service.config import Settings

ROUTE_SYSTEM = "urn:leg-cramp-cds:referral-route"
LINK_LIMIT = 2
DETAIL_LIMIT = 900
Card = dict[str, Any]  # a CDS Hooks card, as JSON


def render(
    results: list[RouteResult],
    ruleset: RuleSet,
    patient_id: str,
    settings: Settings | None = None,
    hidden: frozenset[str] = frozenset(),
) -> list[Card]:
    """The cards of one plan (``engine.plan``), but for the routes in ``hidden``: those a
    clinician's override hides."""
    composed = plan.compose(results, frozenset(ruleset.shared_criteria), hidden)
    return [
        render_card(result, ruleset, patient_id, settings)
        for result in composed
        if result.route.code not in hidden
    ]


def _coding(concept: Concept) -> dict[str, str]:
    return {"system": concept.system, "code": concept.code, "display": concept.display}


def summary_for(result: RouteResult, facts: list[Fact] | None = None) -> str:
    """The route's summary with its findings, most severe first, each once, composed to fit
    (``summary.compose``): every finding as the record words it when that fits, else by its
    rule's short clinical name where the rule file gives one (a code's display may run to 90
    characters), with as many as fit then '(+N more)'. Never cut: when not even one finding
    fits, the summary points to the evidence instead. ``facts``: the findings each once
    (``evidence.unique``), when the caller has them already."""
    variant = result.variant
    template = (variant.summary if variant else None) or result.route.summary
    facts = evidence.unique(result.facts) if facts is None else facts
    named = [summary.Named(evidence.short(f), summary.short_name(result.route, f)) for f in facts]
    unnamed = template.replace("{finding}", "see the evidence")
    return summary.compose((template, unnamed), {"finding": named})


def detail_for(result: RouteResult, facts: list[Fact] | None = None) -> str:
    """Evidence, then the next step and caveats of the rules that fired, nothing else: the
    route's background is on its explanation page. Within DETAIL_LIMIT characters, the
    evidence always stays whole; caveats go first, then the later (less severe) next steps.
    ``facts``: as for ``summary_for``."""
    facts = evidence.unique(result.facts) if facts is None else facts
    shown = ["**Evidence**"] + _evidence_lines(facts)
    # A finding already listed as evidence is not repeated (a context rule may read it too).
    context = [f for f in result.context if not f.hidden and f not in result.facts]
    if context:
        shown += ["", "**Also on record**"] + [f"- {evidence.text(f)}" for f in context]
    blocks = result.content
    steps = [s.text for s in plan.steps_of(result)] + [
        f"See the {title} card for the rest of the plan." for title in result.superseded_by
    ]
    tail = []
    if result.existing_referral is not None:
        authored = result.existing_referral.get("authoredOn")
        name = request_name(result.existing_referral)
        said = [f'"{name}"'] if name else []
        said += [f"ordered {authored[:10]}"] if isinstance(authored, str) else []
        when = f" ({', '.join(said)})" if said else ""
        tail = ["", f"An open referral for this already exists{when}: no new referral is offered."]
    caveats: list[str] = []
    for block in blocks:
        caveats += [c for c in block.caveats if c not in caveats]
    for kept_caveats, kept_steps in [(caveats, steps)] + [
        ([], steps[:n]) for n in range(len(steps), 0, -1)
    ]:
        lines = shown + (["", "**Next step**"] if kept_steps else [])
        lines += kept_steps if len(kept_steps) == 1 else [f"- {s}" for s in kept_steps]
        if len(kept_steps) < len(steps):
            lines.append("- More next steps for the other findings: see the explanation page.")
        lines += tail
        if kept_caveats:
            lines += ["", "**Caveats**"] + [f"- {c}" for c in kept_caveats]
        text = "\n".join(lines)
        if len(text) <= DETAIL_LIMIT:
            break
    return text


def _evidence_lines(facts: list[Fact]) -> list[str]:
    """One line per fact (each finding once already: ``evidence.unique``); the missing
    results together on one line, where the first was."""
    missing = [evidence.missing(fact) for fact in facts]
    first = next((m for m in missing if m), None)
    lines = []
    for fact, gap in zip(facts, missing, strict=True):
        if not gap:
            lines.append(f"- {evidence.text(fact)}")
        elif gap == first:
            lines.append("- No recent result: " + "; ".join(m for m in missing if m))
    return lines


def guideline_link(result: RouteResult) -> Link | None:
    """The guideline link of the most severe rule that fired: the card's ``source.url`` and
    its first link. ``result.fired`` is most severe first by indicator, then file order; a
    card variant (its summary) names the rules that make it, so they come first ("limb at
    risk": the CLTI guideline, not the PAD one of an ABI rule listed earlier). A fired rule
    whose content names no link falls through to the next one; the route's first link is the
    last resort (tests/test_card_text.py keeps every firing rule of the shipped cards linked)."""
    for criterion_id in by_severity(result):
        name = result.route.content_of.get(criterion_id)
        block = result.route.content.get(name) if name is not None else None
        if block is not None and block.links:
            return block.links[0]
    return result.route.links[0] if result.route.links else None


def by_severity(result: RouteResult) -> list[str]:
    """The fired rules, those of the card's variant first."""
    framing = result.variant.when if result.variant is not None else frozenset()
    return [r for r in result.fired if r in framing] + [r for r in result.fired if r not in framing]


def links_for(
    result: RouteResult, link: Link | None, settings: Settings | None = None
) -> list[dict[str, str]]:
    """``link`` (the result's ``guideline_link``, also the card's ``source.url``), then the
    card's explanation page (its route and fired rules, no patient data): LINK_LIMIT in all."""
    shown = [{"label": link.label, "url": link.url, "type": "absolute"}] if link else []
    return shown[: LINK_LIMIT - 1] + [
        explain.explain_link(result.route.code, result.fired, settings)
    ]


def _service_request(
    code: dict[str, str],
    patient_id: str,
    priority: str,
    reasons: list[str],
    note: str | None = None,
    text: str | None = None,
) -> dict[str, object]:
    resource: dict[str, object] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": priority,
        "code": {"coding": [code], "text": text or code["display"]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if reasons:
        resource["reasonReference"] = [{"reference": r} for r in reasons]
    if note:
        resource["note"] = [{"text": note}]
    return resource


def _reasons(facts: list[Fact]) -> list[str]:
    seen: list[str] = []
    for fact in facts:
        for ref in fact.references:
            if ref not in seen:
                seen.append(ref)
    return seen


def suggestions_for(result: RouteResult, patient_id: str) -> list[dict[str, Any]]:
    route = result.route
    variant = result.variant
    reasons = _reasons(result.facts)
    suggestions: list[dict[str, Any]] = []
    referral = route.referral
    no_referral = variant is not None and variant.no_referral
    if referral is not None and result.existing_referral is None and not no_referral:
        code = _coding(referral.code)
        priority = (variant.priority if variant else None) or referral.priority
        label = (variant.referral_label if variant else None) or referral.label
        name = referral.text or code["display"]
        suggestions.append(
            {
                "label": label,
                "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": f"{label} ({name}, priority {priority})",
                        "resource": _service_request(
                            code, patient_id, priority, reasons, text=referral.text
                        ),
                    }
                ],
            }
        )
    wanted: list[str] = []
    for fact in result.facts:
        if fact.order and fact.order not in wanted:
            wanted.append(fact.order)
    if wanted:
        actions: list[dict[str, Any]] = []
        for key in wanted:
            code = _coding(route.orders[key].code)
            actions.append(
                {
                    "type": "create",
                    "description": f"Order {code['display']}",
                    "resource": _service_request(code, patient_id, "routine", []),
                }
            )
        suggestions.append(
            {
                "label": route.orders_label,
                "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": actions,
            }
        )
    return suggestions


def render_card(
    result: RouteResult, ruleset: RuleSet, patient_id: str, settings: Settings | None = None
) -> Card:
    route = result.route
    source = guideline_link(result)
    facts = evidence.unique(result.facts)  # for the summary and the detail alike
    card: Card = {
        "uuid": str(uuid.uuid4()),
        "summary": summary_for(result, facts),
        "indicator": result.indicator,
        "detail": detail_for(result, facts),
        "source": {
            "label": f"Leg-cramp referral guidance: {route.title}",
            "topic": {"system": ROUTE_SYSTEM, "code": route.code, "display": route.title},
        },
        "overrideReasons": ruleset.override_reasons,
    }
    if source is not None:
        card["source"]["url"] = source.url
    links = links_for(result, source, settings)
    if links:
        card["links"] = links
    suggestions = suggestions_for(result, patient_id)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    return card
