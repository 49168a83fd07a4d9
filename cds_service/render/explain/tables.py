"""Every route as a plain-language decision table (``cds-service check-rules --explain``),
from the same page model as the HTML pages."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from cds_service.render.explain.build import (
    UNLESS_WORDS,
    explain_route,
    explain_shared,
    source_attributes,
)
from cds_service.render.explain.model import (
    CodeList,
    RouteExplanation,
    RuleExplanation,
    SharedExplanation,
)
from cds_service.render.explain.wording import CONDITION_COUNTS

if TYPE_CHECKING:
    from cds_service.engine.model import RuleSet

GENERAL_RULES = (
    f"Problems count only with {CONDITION_COUNTS}.",
    "For a lab rule the newest result in its window decides (unless the rule says highest or "
    "lowest); only final, amended or corrected results count unless the rule lists others.",
    "A result counts only as a number in a convertible unit within the concept's plausible "
    "range; one that cannot be read or is implausible is shown for review, never used.",
    "Medicines are matched by RxNorm code or by name; every rule needs a leg-cramp problem on "
    "record, and a deceased patient gets no cards.",
)


class Table:
    """Lines of wrapped text ``width`` wide."""

    def __init__(self, width: int):
        self.width = width
        self.lines: list[str] = []

    def para(self, prefix: str, text: str, indent: str = "      ") -> None:
        # Never at a hyphen: rule ids ("potassium-critical-low") stay whole, for grep.
        self.lines += textwrap.wrap(
            text,
            width=self.width,
            initial_indent=prefix,
            subsequent_indent=indent,
            break_on_hyphens=False,
        ) or [prefix.rstrip()]

    def add(self, *lines: str) -> None:
        self.lines += lines

    def details(self, rule: RuleExplanation) -> None:
        # A shared criterion's own words are printed once, under "Shared definitions".
        for line in rule.own_details if rule.shared_file else rule.details:
            if line.startswith(UNLESS_WORDS):
                self.para("      UNLESS ", line[len(UNLESS_WORDS) :], "             ")
            else:
                self.para("      - ", line, "        ")


def decision_tables(
    ruleset: RuleSet,
    content_hash: str,
    width: int = 100,
    models: dict[str, RouteExplanation] | None = None,
) -> str:
    """Every route as a plain-language decision table; ``models``: the page models by route
    code when already built (``Explainer.models``)."""
    table = Table(width)
    _header(table, ruleset, content_hash)
    for route in ruleset.routes:
        model = models[route.code] if models is not None else explain_route(route, ruleset)
        _route(table, model)
    _shared(table, explain_shared(ruleset))
    return "\n".join(table.lines).rstrip() + "\n"


def _header(table: Table, ruleset: RuleSet, content_hash: str) -> None:
    source = source_attributes(ruleset, content_hash)
    header = [
        f"Leg-cramp referral rules, version {source.version} (content {source.content_hash})",
        f"Developer: {source.developer}",
        f"Funding source: {source.funding_source}",
        f"Released {source.release_date}"
        + (f", revised {source.revision_date}" if source.revision_date else ""),
        f'Source: "{source.citation_title}" and the guidelines each route links.',
    ]
    for text in header:
        table.add(*textwrap.wrap(text, width=table.width, subsequent_indent="  "))
    table.add("")
    table.para("Data rules every rule follows: ", " ".join(GENERAL_RULES), "  ")
    table.add("")


def _route(table: Table, r: RouteExplanation) -> None:
    table.add("=" * table.width)
    table.add(f"{r.title} [{r.code}], indicator {r.indicator}  ({r.source_file})")
    table.add("=" * table.width)
    table.para("Why:  ", r.why or "")
    table.para("Who:  ", r.referral or "no referral; " + (r.action or ""))
    if r.referral_recognised:
        table.para("      ", r.referral_recognised)
    table.add("", "IF (rule makes a card) ... THEN")
    for rule in r.firing:
        _firing_rule(table, r, rule)
    blocks = [rule for rule in r.rules if rule.role != "fires"]
    names = {rule.id: rule.name for rule in r.rules}
    if blocks:
        table.add("", "Building blocks (never a card on their own) and context:")
        for rule in blocks:
            _named(table, rule)
            table.details(rule)
            if rule.used_by:
                used = "; ".join(names.get(i, i) for i in rule.used_by)
                table.para("      USED BY ", used, "              ")
    _codes_read(table, r)
    if r.variants:
        table.add("", "Card wording variants (the first that applies wins):")
        for v in r.variants:
            table.para(
                f"  {v.index + 1}. ",
                f'{v.when_words(names)}: "{v.summary or r.summary}"'
                + (" (no referral offered)" if v.no_referral else ""),
                "      ",
            )
    table.add("")


def _named(table: Table, rule: RuleExplanation) -> None:
    """The rule by name with its id in brackets, then its sentence when it says more."""
    table.para("  ", f"{rule.name} [{rule.id}]", "      ")
    if rule.shared_file:
        when = f"as defined once for every route (see Shared definitions, {rule.shared_file})"
    else:
        when = rule.when
    if when.rstrip(".") != rule.name:
        table.para("      WHEN ", when, "           ")


def _shared(table: Table, shared: list[SharedExplanation]) -> None:
    """Each criterion defined once in cards/shared/, with every rule that uses it."""
    if not shared:
        return
    table.add("=" * table.width, "Shared definitions (cards/shared/): each defined once")
    table.add("=" * table.width)
    for item in shared:
        table.para("  ", f"{item.name or item.id} [{item.id}]", "      ")
        table.para("      WHEN ", item.when, "           ")
        for line in item.details:
            table.para("      - ", line, "        ")
        for code_list in item.reads:
            codes = "; ".join(c.text for c in code_list.codes)
            table.para(
                f"      {code_list.kind} {code_list.label}: ", codes or "by name", "        "
            )
        users = ", ".join(u.text for u in item.users) or "no rule"
        table.para("      used by ", users, "              ")
    table.add("")


def _firing_rule(table: Table, r: RouteExplanation, rule: RuleExplanation) -> None:
    _named(table, rule)
    table.details(rule)
    variant = next((v for v in r.variants if v.index in rule.variants), None)
    then = f"card {rule.indicator}"
    if variant is not None and variant.summary:
        then += f': "{variant.summary}"'
    elif r.summary:
        then += f': "{r.summary}"'
    table.para("      THEN ", then, "           ")
    if rule.next_step:
        table.para("      NEXT STEP ", rule.next_step, "           ")
    if rule.evidence_level:
        level = rule.evidence_level
        table.para(
            "      EVIDENCE ", f"{level['level']} (source: {level['source']})", "           "
        )


def _codes_read(table: Table, r: RouteExplanation) -> None:
    reads: dict[tuple[str, str], CodeList] = {}
    for rule in r.rules:
        for code_list in rule.reads:
            reads.setdefault((code_list.kind, code_list.name), code_list)
    if not reads:
        return
    table.add("", "Codes read:")
    for code_list in reads.values():
        codes = "; ".join(c.text for c in code_list.codes)
        extra = f" (+{code_list.more} product codes)" if code_list.more else ""
        table.para(
            f"  {code_list.kind} {code_list.label} [{code_list.name}]: ",
            (codes or "matched by name only") + extra,
            "      ",
        )
