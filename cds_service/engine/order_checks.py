"""Compare a call's draft orders with the chart's advice: the order-time checks.

The chart's advice is what the route files decide (``evaluation.evaluate``); a draft
referral is read as the route whose referral it names (``referrals.referral_route``), a draft
medicine by the routes' medication classifier. Which comparisons make a card, in which
order, and with which words is ``cards/orders/*.yaml`` (``order_rules``). Drafts are read
here only: the chart's medicines (``MEDICATION_ACTIVE``) leave them out on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cds_service.engine.criteria.medication import medication_name
from cds_service.engine.evaluation import Evaluation
from cds_service.engine.referrals import open_referral, referral_route

if TYPE_CHECKING:
    from cds_service.engine.facts import Fact, RouteResult
    from cds_service.engine.medications import Matches
    from cds_service.engine.model import Route, RuleSet
    from cds_service.engine.order_rules import MedicationCheck, OrderRules, ReferralCheck
    from cds_service.engine.record import Record
    from cds_service.engine.shapes import Resource

DRAFT = "draft"  # the status of an order not yet signed (CDS Hooks order-select, order-sign)


@dataclass
class OrderFinding:
    """A draft order that does not fit the advice, with what the card rests on."""

    check: ReferralCheck | MedicationCheck
    draft: Resource
    advice: RouteResult | None = None  # the chart's advice the card follows (referrals)
    drafted: Route | None = None  # the route whose referral the draft names
    existing: Resource | None = None  # the open referral a draft repeats
    facts: list[Fact] = field(default_factory=list)  # the results that make a medicine matter
    matches: Matches = field(default_factory=list)  # how a drafted medicine was classified
    medicine: str | None = None  # the drafted medicine's name as ordered

    @property
    def fired(self) -> list[str]:
        """The check, then the rules of the advice or the criteria that held."""
        shown = self.advice.fired if self.advice is not None else []
        return [self.check.id, *shown, *dict.fromkeys(f.criterion for f in self.facts)]


def drafts_of(draft_orders: object, selections: object = None) -> list[Resource]:
    """The resources of ``context.draftOrders`` with status draft; with ``selections``
    (order-select), only those selected ("Type/id")."""
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    found = []
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("status") == DRAFT:
            found.append(resource)
    if isinstance(selections, list):
        chosen = {s for s in selections if isinstance(s, str)}
        found = [r for r in found if f"{r.get('resourceType')}/{r.get('id')}" in chosen]
    return found


def check_orders(
    rules: OrderRules,
    ruleset: RuleSet,
    chart: Record,
    advice: list[RouteResult],
    drafts: list[Resource],
) -> list[OrderFinding]:
    """One finding at most per draft: the first of its checks that holds."""
    findings = []
    for draft in drafts:
        kind = draft.get("resourceType")
        if kind == "ServiceRequest" and draft.get("intent") in rules.referral_intents:
            finding = _check_referral(rules, ruleset, chart, advice, draft)
        elif kind == "MedicationRequest":
            finding = _check_medicine(rules, ruleset, chart, draft)
        else:
            finding = None
        if finding is not None:
            findings.append(finding)
    return findings


def _check_referral(
    rules: OrderRules,
    ruleset: RuleSet,
    chart: Record,
    advice: list[RouteResult],
    draft: Resource,
) -> OrderFinding | None:
    drafted = referral_route(draft, ruleset.routes, ruleset.referral_words)
    if drafted is None:
        return None
    for check in rules.referral_checks:
        if check.when == "already-open":
            existing = open_referral(chart, drafted, ruleset.referral_words)
            if existing is not None:
                return OrderFinding(check, draft, drafted=drafted, existing=existing)
        elif check.when == "urgent-on-record":
            urgent = next((r for r in advice if r.indicator == "critical"), None)
            if urgent is not None and draft.get("priority") not in check.urgent_priorities:
                return OrderFinding(check, draft, advice=urgent, drafted=drafted)
        elif check.when == "another-supported":
            if any(r.route is drafted for r in advice):
                continue  # the evidence supports the drafted specialty: it fits
            other = next((r for r in advice if _offers_referral(r)), None)
            if other is not None:
                return OrderFinding(check, draft, advice=other, drafted=drafted)
    return None


def _offers_referral(result: RouteResult) -> bool:
    """The route's card offers a referral (none is open already, no variant withholds it)."""
    variant = result.variant
    return (
        result.route.referral is not None
        and result.existing_referral is None
        and not (variant is not None and variant.no_referral)
    )


def _check_medicine(
    rules: OrderRules, ruleset: RuleSet, chart: Record, draft: Resource
) -> OrderFinding | None:
    """The first medicine check whose class the draft is in and whose results hold."""
    for check in rules.medication_checks:
        classifier = next(
            (
                r.medications
                for r in ruleset.routes
                if r.medications is not None and check.classes <= r.medications.classes
            ),
            None,
        )
        if classifier is None:  # the loader made sure some route knows each class
            continue
        matches = [m for m in classifier.classify(draft, chart) if m[0].drug_class in check.classes]
        if not matches:
            continue
        facts: list[Fact] = []
        for criterion_id, route in zip(check.when_any, check.routes, strict=True):
            facts += Evaluation(ruleset, route, chart).check(criterion_id)
        if facts:
            name = medication_name(draft, chart)
            return OrderFinding(check, draft, facts=facts, matches=matches, medicine=name)
    return None
