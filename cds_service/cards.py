"""Turn route results into CDS Hooks cards: summary, evidence, suggestion, links.

Wording comes from the route files; this module only assembles it in the shape the
CDS Hooks spec and ``design.md`` require (topic coding, ServiceRequest suggestion,
override reasons, no empty members).
"""

from __future__ import annotations

import uuid

from cds_service.criteria import Fact, RouteResult
from cds_service.rules import RuleSet
from cds_service.terminology import canonical_system

ROUTE_SYSTEM = "urn:leg-cramp-cds:referral-route"
SUMMARY_LIMIT = 139


def render(results: list[RouteResult], ruleset: RuleSet, patient_id: str) -> list[dict]:
    return [render_card(result, ruleset, patient_id) for result in results]


def _coding(entry: dict) -> dict:
    return {"system": canonical_system(entry["system"]), "code": str(entry["code"]),
            "display": entry["display"]}


def summary_for(result: RouteResult) -> str:
    """The route's summary with as many findings as fit in 139 characters, then '+N more'."""
    template = (result.variant or {}).get("summary") or result.route.data["summary"]
    findings = []
    for fact in result.facts:
        if fact.short not in findings:
            findings.append(fact.short)
    for shown in range(len(findings), 0, -1):
        rest = len(findings) - shown
        text = "; ".join(findings[:shown]) + (f" (+{rest} more)" if rest else "")
        summary = template.replace("{finding}", text)
        if len(summary) <= SUMMARY_LIMIT:
            return summary
    summary = template.replace("{finding}", findings[0])
    return summary[:SUMMARY_LIMIT - 1].rstrip() + "…"


def detail_for(result: RouteResult) -> str:
    data = result.route.data
    variant = result.variant or {}
    lines = [data["why"].strip(), "", "**Evidence**"]
    lines += [f"- {fact.text}" for fact in result.facts]
    if result.context:
        lines += ["", "**Also on record**"]
        lines += [f"- {fact.text}" for fact in result.context]
    lines += ["", "**Next step**", (variant.get("action") or data["action"]).strip()]
    if result.existing_referral is not None:
        authored = result.existing_referral.get("authoredOn")
        when = f" (ordered {authored[:10]})" if isinstance(authored, str) else ""
        lines += ["", f"An open referral for this already exists{when}: no new referral is offered."]
    caveats = data.get("caveats", [])
    if caveats:
        lines += ["", "**Caveats**"] + [f"- {c.strip()}" for c in caveats]
    return "\n".join(lines)


def _service_request(code: dict, patient_id: str, priority: str, reasons: list[str],
                     note: str | None = None) -> dict:
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": priority,
        "code": {"coding": [code], "text": code["display"]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if reasons:
        resource["reasonReference"] = [{"reference": r} for r in reasons]
    if note:
        resource["note"] = [{"text": note}]
    return resource


def _reasons(facts: list[Fact]) -> list[str]:
    seen = []
    for fact in facts:
        for ref in fact.references:
            if ref not in seen:
                seen.append(ref)
    return seen


def suggestions_for(result: RouteResult, patient_id: str) -> list[dict]:
    data = result.route.data
    variant = result.variant or {}
    reasons = _reasons(result.facts)
    suggestions = []
    if "referral" in data and result.existing_referral is None and not variant.get("no_referral"):
        referral = data["referral"]
        code = _coding(referral["code"])
        priority = variant.get("priority") or referral["priority"]
        label = variant.get("referral_label") or referral["label"]
        suggestions.append({
            "label": label,
            "uuid": str(uuid.uuid4()),
            "isRecommended": True,
            "actions": [{
                "type": "create",
                "description": f"{label} ({code['display']}, priority {priority})",
                "resource": _service_request(code, patient_id, priority, reasons),
            }],
        })
    orders = data.get("orders", {})
    wanted = []
    for fact in result.facts:
        if fact.order and fact.order not in wanted:
            wanted.append(fact.order)
    if wanted:
        actions = []
        for key in wanted:
            code = _coding(orders[key])
            actions.append({"type": "create", "description": f"Order {code['display']}",
                            "resource": _service_request(code, patient_id, "routine", [])})
        suggestions.append({"label": data["orders_label"],
                            "uuid": str(uuid.uuid4()), "isRecommended": True,
                            "actions": actions})
    return suggestions


def render_card(result: RouteResult, ruleset: RuleSet, patient_id: str) -> dict:
    route = result.route
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": summary_for(result),
        "indicator": result.indicator,
        "detail": detail_for(result),
        "source": {
            "label": f"Leg-cramp referral guidance: {route.title}",
            "url": route.data["links"][0]["url"],
            "topic": {"system": ROUTE_SYSTEM, "code": route.code, "display": route.title},
        },
        "overrideReasons": ruleset.override_reasons,
        "links": [{"label": link["label"], "url": link["url"], "type": "absolute"}
                  for link in route.data["links"]],
    }
    suggestions = suggestions_for(result, patient_id)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    return card
