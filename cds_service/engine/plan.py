"""One plan per patient: the next steps of every card, composed after every route decided.

Cards come most urgent first. Walking them in that order, a step is left out when another
card already
- asks for one of its tests (each test is asked for once, on the most urgent card; or on
  the card that offers it as an order, whose button is the ask),
- acts on one of its drug classes (``drugs``: "stop the statin" on an urgent card wins over
  "consider a dose change" on the medication card), or
- holds a finding the step is written against (``unless`` naming a criterion defined once in
  ``cards/shared/``, which keeps its id on every route: no workup for a diagnosis on record),
  or
- is the card of the route whose referral the step asks for (``refers_to``), whichever
  comes first: that card's own referral is the ask, and the step points to it.
What conflicts is data in the rule files (a step's ``asks``, ``unless_recent``, ``drugs``,
``unless`` and ``refers_to``); nothing here names a drug, a test or a route.

The plan is composed again once a clinician's override has hidden a card (``service``): what
the hidden card asked for goes back to the cards still shown, a step that asks for its route's
referral is left out (the override said how that referral stands), and no card points to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cds_service.engine.facts import MissingResult

if TYPE_CHECKING:
    from cds_service.engine.facts import RouteResult
    from cds_service.engine.model import Step


@dataclass
class Plan:
    """What the cards composed so far ask for and do, each with the card that said it."""

    shared: frozenset[str]  # ids of the criteria defined once (cards/shared/)
    tests: dict[str, str] = field(default_factory=dict)  # test -> card title
    drugs: dict[str, str] = field(default_factory=dict)  # drug class -> card title
    findings: dict[str, str] = field(default_factory=dict)  # shared criterion -> card title

    orders: dict[str, str] = field(default_factory=dict)  # test offered as an order -> card
    cards: dict[str, str] = field(default_factory=dict)  # route code -> its card's title

    def taken_by(self, step: Step, own: str) -> str | None:
        """The title of another card that supersedes this step, if any: one more urgent,
        one that offers one of its tests as an order (the order is the ask), or the card of
        the route it refers to (that card's referral is the ask)."""
        if step.refers_to is not None and step.refers_to in self.cards:
            return self.cards[step.refers_to]
        for test in sorted(step.tests):
            if test in self.tests:
                return self.tests[test]
            if self.orders.get(test, own) != own:
                return self.orders[test]
        for drug_class, _action in step.drugs:
            if drug_class in self.drugs:
                return self.drugs[drug_class]
        return next((self.findings[c] for c in step.unless if c in self.findings), None)

    def add(self, result: RouteResult, kept: list[Step]) -> None:
        title = result.route.title
        for step in kept:
            for test in step.tests:
                self.tests.setdefault(test, title)
            for drug_class, _action in step.drugs:
                self.drugs.setdefault(drug_class, title)
        for fact in result.facts + result.context:
            if fact.criterion in self.shared:
                self.findings.setdefault(fact.criterion, title)


def compose(
    results: list[RouteResult], shared: frozenset[str], hidden: frozenset[str] = frozenset()
) -> list[RouteResult]:
    """Each card keeps the chosen steps no other card supersedes; ``superseded_by`` names
    the cards that took the others. ``hidden``: the routes whose cards a clinician's override
    hides: what they asked for goes back to the cards shown, and a step they would take (a
    referral to that route, a step written against a finding on it) is left out without a
    pointer. The results are changed in place and returned; composing again starts afresh."""
    plan = Plan(shared, cards={r.route.code: r.route.title for r in results})
    shown = [r for r in results if r.route.code not in hidden]
    hidden_titles = {r.route.title for r in results} - {r.route.title for r in shown}
    for result in shown:  # the tests offered as orders (a missing result's button)
        for fact in result.facts:
            if fact.order and isinstance(fact.evidence, MissingResult):
                for test in fact.evidence.concepts:
                    plan.orders.setdefault(test, result.route.title)
    for result in results:
        result.superseded_by = []
        hidden_card = result.route.code in hidden
        result.steps = [] if hidden_card else _kept(plan, result, hidden_titles)
        plan.add(result, result.steps)  # a hidden card: its findings only
    return results


def _kept(plan: Plan, result: RouteResult, hidden_titles: set[str]) -> list[Step]:
    """The result's chosen steps no card before it took; the titles of those that did."""
    own = result.route.title
    kept: list[Step] = []
    for step in chosen_steps(result):
        title = plan.taken_by(step, own)
        if title is None or title == own:
            kept.append(step)
        elif title not in result.superseded_by and title not in hidden_titles:
            result.superseded_by.append(title)
    return kept


def steps_of(result: RouteResult) -> list[Step]:
    """The steps the card shows: what the plan kept, or before a plan, the chosen ones."""
    return result.steps if result.steps is not None else chosen_steps(result)


def chosen_steps(result: RouteResult) -> list[Step]:
    """The steps chosen for the record; for a result no record chose them for, only the
    steps that hold whatever the record (no condition), so a card never goes without one."""
    if result.chosen is not None:
        return result.chosen
    return [s for block in result.content for s in block.steps if not s.conditional]
