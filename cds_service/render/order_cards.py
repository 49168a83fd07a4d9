"""Cards for the order-time checks: a draft order that does not fit the chart's advice.

A referral card is the advice's own card (its evidence, next steps, links, topic) led by what
is wrong with the draft, with one suggestion that acts on the draft: remove it, or replace it
(``delete`` the draft, ``create`` the referral the advice proposes, or the same request made
same-day). A medicine card shows the drafted medicine and the patient's own results that make
it matter. Each card names its check in a card-level ``extension`` (``ORDER_CHECK``; CDS Hooks
2.0 allows one on any object). Words come from ``cards/orders/*.yaml``; this module only
assembles them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from cds_service.engine.order_rules import MedicationCheck, ReferralCheck
from cds_service.engine.referrals import request_name
from cds_service.render import evidence, explain, summary
from cds_service.render.cards import DETAIL_LIMIT, ROUTE_SYSTEM, Card, render_card, suggestions_for

# The card-level CDS Hooks extension naming the order check that made the card (its id in
# cards/orders): what tells an order card, and which check, apart from a patient-view card.
ORDER_CHECK = "leg-cramp-cds.order-check"

if TYPE_CHECKING:
    from cds_service.config import Settings
    from cds_service.engine.facts import Fact
    from cds_service.engine.model import RuleSet
    from cds_service.engine.order_checks import OrderFinding
    from cds_service.engine.shapes import Resource


def render(
    findings: list[OrderFinding],
    ruleset: RuleSet,
    patient_id: str,
    settings: Settings | None = None,
) -> list[Card]:
    cards = [
        _referral_card(f, ruleset, patient_id, settings)
        if isinstance(f.check, ReferralCheck)
        else _medicine_card(f, ruleset, settings)
        for f in findings
    ]
    for finding, card in zip(findings, cards, strict=True):
        card["extension"] = {ORDER_CHECK: finding.check.id}
    return cards


def fit_detail(lines: list[str], keep: int) -> str:
    """The lines within DETAIL_LIMIT characters: the first ``keep`` (the evidence) always,
    then as many of the rest as fit; what is left out is on the explanation page."""
    more = "- More on the explanation page."
    for kept in range(len(lines), keep - 1, -1):
        shown = lines[:kept] + ([more] if kept < len(lines) else [])
        text = "\n".join(shown).rstrip()
        if len(text) <= DETAIL_LIMIT:
            return text
    return "\n".join(lines[:keep])[:DETAIL_LIMIT]


def with_draft(detail: str, draft_line: str, next_step: str) -> str:
    """The advice's own detail with the draft first among the evidence and the check's
    next step first among the next steps."""
    lines = detail.splitlines()
    if lines and lines[0] == "**Evidence**":
        lines.insert(1, draft_line)
    else:
        lines[:0] = ["**Evidence**", draft_line, ""]
    evidence_end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    step = next((i for i, line in enumerate(lines) if line == "**Next step**"), None)
    if step is None:
        lines += ["", "**Next step**", next_step]
    else:
        lines[step + 1 : step + 1] = [next_step, ""]
    return fit_detail(lines, evidence_end)


def _referral_card(
    finding: OrderFinding, ruleset: RuleSet, patient_id: str, settings: Settings | None
) -> Card:
    check = finding.check
    assert isinstance(check, ReferralCheck) and finding.drafted is not None
    draft = finding.draft
    drafted = finding.drafted.title
    name = request_name(draft) or drafted
    draft_line = f"- Draft order: {name} (priority {draft.get('priority') or 'not set'})"
    names = {"drafted": [summary.Named(drafted)]}
    if finding.advice is not None:
        card = render_card(finding.advice, ruleset, patient_id, settings)
        names["advised"] = [summary.Named(finding.advice.route.title)]
        card["detail"] = with_draft(card["detail"], draft_line, check.next_step)
    else:
        card = _base_card(finding, ruleset, settings)
        lines = ["**Evidence**", draft_line, *_existing_line(finding.existing)]
        card["detail"] = fit_detail([*lines, "", "**Next step**", check.next_step], len(lines))
    if check.indicator:
        card["indicator"] = check.indicator
    card.pop("suggestions", None)
    card.pop("selectionBehavior", None)
    suggestion = _suggestion(finding, patient_id)
    card["summary"] = summary.compose(check.summaries, names)
    if suggestion is not None:
        card["suggestions"] = [suggestion]
        card["selectionBehavior"] = "at-most-one"
    return card


def _existing_line(existing: Resource | None) -> list[str]:
    if existing is None:
        return []
    name = request_name(existing)
    authored = existing.get("authoredOn")
    said = [f'"{name}"'] if name else []
    said += [f"ordered {authored[:10]}"] if isinstance(authored, str) else []
    return ["- Open referral on record: " + (", ".join(said) or "to this specialty")]


def _suggestion(finding: OrderFinding, patient_id: str) -> dict[str, Any] | None:
    """One suggestion acting on the draft; none when the draft has no id to act on."""
    check = finding.check
    assert isinstance(check, ReferralCheck)
    draft = finding.draft
    if not isinstance(draft.get("id"), str):
        return None
    remove = {
        "type": "delete",
        "description": "Remove the draft order",
        "resourceId": f"{draft['resourceType']}/{draft['id']}",
    }
    actions: list[dict[str, Any]] = [remove]
    label = check.suggestion
    if check.when == "urgent-on-record":
        same_day = {key: value for key, value in draft.items() if key != "id"}
        same_day["priority"] = check.same_day_priority
        actions.append(
            {
                "type": "create",
                "description": f"The same request, priority {check.same_day_priority}",
                "resource": same_day,
            }
        )
    elif check.when == "another-supported" and finding.advice is not None:
        proposed = suggestions_for(finding.advice, patient_id)
        creates = [a for s in proposed for a in s.get("actions", ()) if a["type"] == "create"]
        if not creates:
            return None
        actions.append(creates[0])
        label = label.replace("{referral}", str(proposed[0]["label"]))
    return {"label": label, "uuid": str(uuid.uuid4()), "isRecommended": True, "actions": actions}


def _base_card(finding: OrderFinding, ruleset: RuleSet, settings: Settings | None) -> Card:
    """A card of the check's own topic (no advice it follows)."""
    check = finding.check
    topic = check.topic
    assert topic is not None  # the rule file schema requires it without advice
    links = [{"label": link.label, "url": link.url, "type": "absolute"} for link in check.links]
    route, rules = finding.explained or (topic.code, ())
    links.append(explain.explain_link(route, rules, settings))
    card: Card = {
        "uuid": str(uuid.uuid4()),
        "summary": check.summary,
        "indicator": check.indicator or "info",
        "detail": "",
        "source": {
            "label": f"Leg-cramp referral guidance: {topic.display}",
            "topic": {"system": ROUTE_SYSTEM, "code": topic.code, "display": topic.display},
        },
        "overrideReasons": ruleset.override_reasons,
        "links": links[:2],
    }
    if check.links:
        card["source"]["url"] = check.links[0].url
    return card


def _medicine_card(finding: OrderFinding, ruleset: RuleSet, settings: Settings | None) -> Card:
    check = finding.check
    card = _base_card(finding, ruleset, settings)
    info, how = finding.matches[0]
    medicine = finding.medicine or info.ingredient
    lines = ["**Evidence**", f"- Draft order: {medicine} ({info.class_label}; {how})"]
    lines += [f"- {evidence.text(fact)}" for fact in finding.facts]
    card["summary"] = _medicine_summary(finding, info.ingredient)
    card["detail"] = fit_detail([*lines, "", "**Next step**", check.next_step], len(lines))
    return card


def _medicine_summary(finding: OrderFinding, ingredient: str) -> str:
    """The drafted medicine as ordered (else its ingredient) with the results that make it
    matter (else their rules' short names, or the first of them and a count)."""
    check = finding.check
    assert isinstance(check, MedicationCheck)
    results = [
        summary.Named(evidence.short(fact), _short_name(check, fact))
        for fact in evidence.unique(finding.facts)
    ]
    medicine = summary.Named(finding.medicine or ingredient, ingredient)
    return summary.compose(check.summaries, {"medicine": [medicine], "finding": results})


def _short_name(check: MedicationCheck, fact: Fact) -> str | None:
    """The short name the route that defines the fact's criterion gives it."""
    route = next((r for r in check.routes if fact.criterion in r.criteria), None)
    return summary.short_name(route, fact) if route is not None else None
