"""Which next steps of the rules that fired fit this patient's record.

A step written in a rule file may hold only for a finding (``when``/``unless``: criteria of
the route, e.g. dialysis or a DVT already coded), only for the medicine classes on the card
(``for_classes``: no long-acting beta-2 agonist advice on a statin card) or only when a test
is absent or stale (``unless_recent``: no "confirm with an ABI" beside an ABI) or only when
the referral it asks for, to another route, is not open on record (``refers_to``). Decided
while the record is open, with the route's memoised criteria; wording stays in the rules.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from cds_service.engine.facts import Fact, MedicationOrder
from cds_service.engine.referrals import open_referral

if TYPE_CHECKING:
    from cds_service.engine.evaluation import Evaluation
    from cds_service.engine.model import Step

RECENT_STATUSES = "result-final-or-preliminary"  # a preliminary result is on record too


def fitting_steps(ev: Evaluation, fired: list[str], on_card: list[Fact]) -> list[Step]:
    """The steps of the fired rules' content blocks that hold, in the order of the rules
    (most severe first), each once."""
    route = ev.route
    classes = classes_on(on_card)
    chosen: list[Step] = []
    seen: set[str] = set()
    asked: frozenset[str] = frozenset()
    for criterion_id in fired:
        name = route.content_of.get(criterion_id)
        if name is None or name in seen:
            continue
        seen.add(name)
        for step in route.content[name].steps:
            if step in chosen or step.tests & asked:
                continue  # once per card, like a test asked by an earlier step
            if holds(ev, step, classes):
                chosen.append(step)
                asked |= step.tests
    return chosen


def classes_on(facts: list[Fact]) -> frozenset[str]:
    """The medication classes of the medicines a card lists (evidence or context)."""
    return frozenset(
        f.evidence.drug_class for f in facts if isinstance(f.evidence, MedicationOrder)
    )


def holds(ev: Evaluation, step: Step, classes: frozenset[str]) -> bool:
    if step.for_classes and not step.for_classes & classes:
        return False
    if not all(ev.check(c) for c in step.when):
        return False
    if any(ev.check(c) for c in step.unless):
        return False
    if any(recent(ev, name, step.recent_days) for name in step.unless_recent):
        return False
    return step.refers_to is None or not referred(ev, step.refers_to)


def referred(ev: Evaluation, route_code: str) -> bool:
    """An open referral of that route on record (as its own card would recognise it)."""
    route = next(r for r in ev.ruleset.routes if r.code == route_code)
    return open_referral(ev.record, route, ev.ruleset.referral_words) is not None


def recent(ev: Evaluation, concept_name: str, days: int) -> bool:
    """A usable result of the concept in the last ``days`` (final or preliminary)."""
    concept = ev.ruleset.concepts[concept_name]
    statuses = ev.ruleset.status_sets[RECENT_STATUSES]
    since = ev.record.now - timedelta(days=days)
    return bool(ev.deciding(concept, since, statuses, None))
