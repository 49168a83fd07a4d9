"""Checks on what a clinician reads on a card, reusable over any corpus of cards (issue 22):
the examples, the shared charts, another helper's vignettes (tests/corpus.py).

``text_problems(cards)`` returns one line per defect, empty when the cards are clean:

- ``source.url`` is the card's own guideline link: the link of the most severe rule that
  fired (the first rule id of the card's explanation link), which is also the card's first
  link;
- the summary is under 100 characters and not cut (no ellipsis, no "(+N more)" that counts
  a finding already named);
- no evidence line is repeated, has an empty unit ("used as )") or shows a raw UCUM
  annotation or bracketed unit ("{ratio}", "ng/mL{FEU}", "m[IU]/L").
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cds_service.engine.loader import load
from cds_service.engine.model import RuleSet
from cds_service.engine.order_rules import OrderCheck, load_orders
from cds_service.render.order_cards import ORDER_CHECK

CARDS_DIR = Path(__file__).resolve().parents[1] / "cards"
SUMMARY_LIMIT = 100  # a summary is shorter than this
EXPLAIN_PATH = "/explain/"

# A UCUM annotation ({ratio}, {FEU}, {1.73_m2}) or a bracketed UCUM unit (m[IU]/L, [degF]).
RAW_UCUM = re.compile(r"\{[^}\s]*\}|\[(?:IU|iU|degF|degC)\]")
# A unit left empty after "used as" or "reported as 0.48".
EMPTY_UNIT = re.compile(r"used as\s*(?:[);,.]|$)|reported as -?[\d.]+\s*(?:[);,]|$)")
HEADINGS = ("**Evidence**", "**Also on record**")


@lru_cache(maxsize=4)
def shipped_rules(cards_dir: Path = CARDS_DIR) -> RuleSet:
    return load(cards_dir)


@lru_cache(maxsize=4)
def shipped_order_checks(cards_dir: Path = CARDS_DIR) -> dict[str, OrderCheck]:
    """The order checks of cards/orders by id."""
    return {c.id: c for c in load_orders(cards_dir, shipped_rules(cards_dir)).checks}


def text_problems(cards: list[dict[str, Any]], ruleset: RuleSet | None = None) -> list[str]:
    """Every text defect of ``cards`` (one patient's or many), worded for a test failure."""
    rules = ruleset or shipped_rules()
    problems: list[str] = []
    for card in cards:
        name = f"{card.get('source', {}).get('topic', {}).get('code', '?')} card"
        found = summary_problems(card) + source_problems(card, rules) + evidence_problems(card)
        problems += [f"{name} ({card.get('summary', '')!r}): {p}" for p in found]
    return problems


def summary_problems(card: dict[str, Any]) -> list[str]:
    summary = card.get("summary", "")
    problems = []
    if len(summary) >= SUMMARY_LIMIT:
        problems.append(f"summary is {len(summary)} characters")
    if "…" in summary or summary.rstrip().endswith("..."):
        problems.append("summary is cut")
    if RAW_UCUM.search(summary):
        problems.append("summary shows a raw UCUM unit")
    counted = _findings_counted(summary)
    listed = _findings_listed(card.get("detail", ""))
    if counted > listed:
        problems.append(f"summary counts {counted} findings, the evidence lists {listed}")
    return problems


def _findings_counted(summary: str) -> int:
    """How many findings the summary names or counts ("a; b (+2 more)": 4)."""
    more = re.search(r" \(\+(\d+) more\)$", summary)
    named = summary[: more.start()] if more else summary
    if ": " not in named:
        return int(more.group(1)) if more else 0
    return len(named.split(": ", 1)[1].split("; ")) + (int(more.group(1)) if more else 0)


def _findings_listed(detail: str) -> int:
    """The evidence's findings: one per line, one per missing result on the grouped line."""
    lines = evidence_lines(detail.split("**Also on record**")[0])
    missing = [line for line in lines if line.startswith("No recent result:")]
    return len(lines) - len(missing) + sum(line.count(" months") for line in missing)


def fired_rules(card: dict[str, Any]) -> list[str]:
    """The rule ids of the card's explanation link, most severe first."""
    for link in card.get("links", []):
        url = urlparse(link.get("url", ""))
        if EXPLAIN_PATH in url.path:
            rules = parse_qs(url.query).get("rules", [""])[0]
            return [r for r in rules.split(",") if r]
    return []


def expected_source(card: dict[str, Any], rules: RuleSet) -> str | None:
    """The guideline link of the most severe fired rule, as the rule files give it."""
    code = card.get("source", {}).get("topic", {}).get("code")
    route = next((r for r in rules.routes if r.code == code), None)
    fired = fired_rules(card)
    if route is None or not fired:
        return None
    variant = route.variant_for(fired)  # the card's framing: its rules are the severe ones
    if variant is not None:
        fired = sorted(fired, key=lambda rule: rule not in variant.when)
    name = route.content_of.get(fired[0])
    block = route.content.get(name) if name else None
    return block.links[0].url if block is not None and block.links else None


def is_own_order_card(card: dict[str, Any]) -> bool:
    """An order-time card of a check's own topic (a drafted medicine, a duplicate referral):
    its source is the check's own guideline, not a route rule's (tests/test_order_checks.py
    checks it). The card names its check (``ORDER_CHECK`` extension); a referral order card
    that follows a route's advice has that route's topic, not its check's, and is that
    route's card."""
    check_id = (card.get("extension") or {}).get(ORDER_CHECK)
    check = shipped_order_checks().get(check_id)
    topic = card.get("source", {}).get("topic", {}).get("code")
    return check is not None and check.topic is not None and check.topic.code == topic


def source_problems(card: dict[str, Any], rules: RuleSet) -> list[str]:
    if is_own_order_card(card):
        return []
    url = card.get("source", {}).get("url")
    expected = expected_source(card, rules)
    if expected is None:
        return [f"the most severe fired rule {fired_rules(card)[:1]} has no guideline link"]
    problems = []
    if url != expected:
        problems.append(f"source.url {url} is not the fired rule's own link {expected}")
    links = [link.get("url") for link in card.get("links", [])]
    if not links or links[0] != url:
        problems.append("the card's first link is not its source guideline")
    return problems


def evidence_lines(detail: str) -> list[str]:
    """The bulleted lines under the card's evidence headings."""
    lines: list[str] = []
    inside = False
    for line in detail.splitlines():
        if line.startswith("**"):
            inside = line.strip() in HEADINGS
        elif inside and line.startswith("- "):
            lines.append(line[2:])
    return lines


def evidence_problems(card: dict[str, Any]) -> list[str]:
    lines = evidence_lines(card.get("detail", ""))
    problems = [f"evidence line repeated: {line!r}" for line in _repeated(lines)]
    # The same result or problem twice, worded differently by two rules (its name, value,
    # date and code are the line's start, up to the first closing parenthesis).
    heads = [line.split(")")[0] for line in lines if ")" in line]
    problems += [f"same finding on two lines: {head!r})" for head in _repeated(heads)]
    for line in lines:
        if EMPTY_UNIT.search(line):
            problems.append(f"evidence line with an empty unit: {line!r}")
        if RAW_UCUM.search(line):
            problems.append(f"evidence line with a raw UCUM unit: {line!r}")
    return problems


def _repeated(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for line in lines:
        if line in seen and line not in twice:
            twice.append(line)
        seen.add(line)
    return twice
