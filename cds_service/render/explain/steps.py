"""A content block's next steps in words for a clinical reviewer, each with when it shows.

The engine keeps a step's condition as data (rule ids, medicine classes, lab concepts); this
is where it becomes a sentence, with the same plain names the rest of the page uses, so no
internal id reaches the reviewer.
"""

from __future__ import annotations

from cds_service.engine.model import Content, Route, RuleSet, Step
from cds_service.render.explain.names import inner, join, rule_name


def _rules(ids: tuple[str, ...], route: Route, last: str) -> str:
    return join([inner(rule_name(route.criteria[i], route)) for i in ids], last)


def _classes(classes: frozenset[str], route: Route) -> str:
    specs = route.medications.specs if route.medications else {}
    return join([str(specs.get(k, {}).get("label", k)) for k in sorted(classes)], "or")


def _tests(names: tuple[str, ...], ruleset: RuleSet) -> str:
    labels = [ruleset.concepts[n].label if n in ruleset.concepts else n for n in names]
    return join([inner(label) for label in labels], "or")


def condition(step: Step, route: Route, ruleset: RuleSet) -> str:
    """When the step is shown, in plain words ('' when always)."""
    parts = [f"only with {_rules(step.when, route, 'and')}"] if step.when else []
    if step.unless:
        parts.append(f"not with {_rules(step.unless, route, 'or')}")
    if step.for_classes:
        parts.append(f"only for {_classes(step.for_classes, route)} on the card")
    if step.unless_recent:
        tests = _tests(step.unless_recent, ruleset)
        parts.append(f"only with no {tests} result in the last {step.recent_days} days")
    if step.refers_to is not None:
        title = next(r.title for r in ruleset.routes if r.code == step.refers_to)
        parts.append(f"not with an open {title} referral on record or a {title} card")
    return "; ".join(parts)


def next_steps(block: Content, route: Route, ruleset: RuleSet) -> str:
    """Every step of the block, each followed by its condition in brackets."""
    return " ".join(
        step.text + (f" [{cond}]" if (cond := condition(step, route, ruleset)) else "")
        for step in block.steps
    )
