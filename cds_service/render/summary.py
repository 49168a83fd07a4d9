"""Card summaries composed to fit: how every card, patient-view or order-time, says what it
is about in under 100 characters without cutting a word or a thought.

A summary is a template of the rule files with slots (``{finding}``, ``{drafted}``) for what
the card names. When the whole wording is too long, it is composed again from the shorter
forms the rule files give, never by cutting: a slot names its items by their short names
(a criterion's ``short_name``, a medicine's ingredient), then its first items and
"(+N more)"; the longest slot gives way first. When no wording of a template fits, the next
template is tried (an order check's ``short_summary``; for a route, pointing to the evidence).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds_service.engine.facts import Fact
    from cds_service.engine.model import Route

SUMMARY_LIMIT = 99
SLOT = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Named:
    """One thing a summary names: as the record words it, and the rule files' shorter name
    for it (None: it has none)."""

    worded: str
    short: str | None = None


def compose(templates: Sequence[str], slots: Mapping[str, Sequence[Named]]) -> str:
    """The first of ``templates`` that fits SUMMARY_LIMIT with its slots in their fullest
    wording that fits; the last template's shortest wording when none fits (the rule files
    keep a last template that always does: tests/test_order_checks.py, test_card_text.py)."""
    text = ""
    for template in templates:
        forms = {key: _forms(slots.get(key, ())) for key in SLOT.findall(template)}
        chosen = dict.fromkeys(forms, 0)
        while True:
            text = _fill(template, {key: forms[key][i] for key, i in chosen.items()})
            if len(text) <= SUMMARY_LIMIT:
                return text
            shorter = [key for key in forms if chosen[key] + 1 < len(forms[key])]
            if not shorter:
                break
            longest = max(shorter, key=lambda key: len(forms[key][chosen[key]]))
            chosen[longest] += 1
    return text


def short_name(route: Route, fact: Fact) -> str | None:
    """The short clinical name the route's rule gives the fact's finding, if any."""
    criterion = route.criteria.get(fact.criterion)
    return criterion.short_name if criterion is not None else None


def _forms(items: Sequence[Named]) -> list[str]:
    """A slot's wordings, fullest first: every item as the record words it, every item by its
    short name, then fewer items with a count of the rest."""
    worded = _once(item.worded for item in items)
    named = _once(item.short or item.worded for item in items)
    forms = ["; ".join(worded), "; ".join(named)]
    forms += [
        "; ".join(named[:shown]) + f" (+{len(named) - shown} more)"
        for shown in range(len(named) - 1, 0, -1)
    ]
    return _once(forms)


def _fill(template: str, values: Mapping[str, str]) -> str:
    """The template with each slot replaced in one pass (a value is never read as a slot)."""
    return SLOT.sub(lambda match: values.get(match.group(1), match.group(0)), template)


def _once(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))
