"""Public citations only: the rule files' internal references, taken out of reviewer text.

The rule files cite the team's own notes beside the public sources ("ASH 2018 VTE diagnosis
guideline (route-guide §8.8)", "issue 13"): useful to whoever edits a rule, but a document a
clinical reviewer cannot open. The pages keep the guideline, its section and its link, and
any remark the reference carried ("route-guide §8.8 (a DVT already anticoagulated is not a
new emergency)" keeps the remark); only the internal reference itself goes.
"""

from __future__ import annotations

import re

_SECTIONS = r"(?:\s*§\s*[\d.]+(?:\s*\([a-z]\))?(?:\s*,\s*§\s*[\d.]+(?:\s*\([a-z]\))?)*)?"
_DOCUMENT = r"(?:[Rr]oute-guide|[Rr]ules-reference)(?:\.md)?" + _SECTIONS
_ISSUE = r"\b[Ii]ssue \d+"
_STEPS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (rf"product decision\s+in\s+{_DOCUMENT}", "product decision of this service"),
        # "no guideline cited in route-guide or rules-reference"
        (rf"\s+in\s+{_DOCUMENT}(?:\s+(?:or|and)\s+{_DOCUMENT})*", ""),
        # "route-guide §8.9: remark" and "route-guide §8.8 (remark)": the remark stays
        (rf"{_DOCUMENT}\s*:\s*", ""),
        (rf"{_DOCUMENT}\s*\(([^()]{{4,}})\)", r"\1"),
        (rf"{_ISSUE}'s\s+", "this service's "),
        (rf"{_DOCUMENT}|{_ISSUE}", ""),
        # a section number left alone after a removed reference: "check TSH/CK), §8.3"
        (r"(?<=[,;)])\s*§\s*[\d.]+", ""),
        (r"\s*\(\s*§\s*[\d.]+\s*\)", ""),
    )
)
_TIDY: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\(\s*[,;]?\s*\)", ""),  # an emptied parenthesis
        (r"\(\s*[,;]\s*", "("),
        (r"\s*[,;]\s*\)", ")"),
        (r"([,;])(\s*[,;])+", r"\1"),
        (r"^\s*[,;:]\s*|\s*[,;:]\s*$", ""),
        (r"\s+([,;.)])", r"\1"),
        (r"\s{2,}", " "),
    )
)
INTERNAL = re.compile(rf"{_DOCUMENT}|{_ISSUE}|\.md\b")


def public(text: str) -> str:
    """``text`` without references to documents a reader cannot open."""
    if not INTERNAL.search(text):
        return text
    for pattern, replacement in _STEPS:
        text = pattern.sub(replacement, text)
    for _ in range(3):  # a tidy step can expose another (",;)" -> ";)" -> ")")
        for pattern, replacement in _TIDY:
            text = pattern.sub(replacement, text)
    text = text.strip()
    return text[:1].upper() + text[1:]
