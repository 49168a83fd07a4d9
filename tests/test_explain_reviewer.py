"""Explanation pages a clinical reviewer can use (issue 22): plain names for every value set
and rule (ids only as small references), each rule in one sentence that says something
(never "Rule x holds"), and only citations a reader can open."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import test_explain
import yaml
from test_explain import CARDS

from cds_service.cli import main
from cds_service.engine import RuleError, load_rules
from cds_service.render.explain.citations import public
from cds_service.render.explain.names import inner, rule_name

# Ids that are also plain words in the rule files' citations ("a magnesium-wasting risk drug").
PLAIN_WORDS = {"magnesium-wasting"}
INTERNAL = re.compile(r"route-guide|rules-reference|\.md\b|\bissue \d+", re.I)
# tests/test_explain.py's fixtures, shared: the rules and their explainer, read once a module.
ruleset = test_explain.ruleset
explainer = test_explain.explainer


@pytest.fixture(scope="module")
def pages(explainer, ruleset) -> dict[str, str]:
    found = {"index": explainer.index_html()}
    for route in ruleset.routes:
        found[route.code] = explainer.route_html(route.code)
    return found


class Shown(HTMLParser):
    """The text a reader sees as prose: without ``<code>`` (ids, codes, file names)."""

    def __init__(self, page: str):
        super().__init__()
        self.parts: list[str] = []
        self.headings: dict[str, str] = {}  # h3 id -> its text
        self._code = 0
        self._h3: str | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self._code += tag == "code"
        if tag == "h3":
            self._h3 = dict(attrs).get("id") or ""
            self.headings[self._h3] = ""

    def handle_endtag(self, tag):
        self._code -= tag == "code"
        if tag == "h3":
            self._h3 = None

    def handle_data(self, data):
        if not self._code:
            self.parts.append(data)
            if self._h3 is not None:
                self.headings[self._h3] += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def _ids(ruleset) -> set[str]:
    """Every rule and value set id with a hyphen (a plain word like "pregnancy" may be both)."""
    ids = {vs.name for route in ruleset.routes for vs in route.value_sets.values()}
    ids |= {c for route in ruleset.routes for c in route.criteria}
    return {i for i in ids if "-" in i} - PLAIN_WORDS


def test_every_value_set_a_rule_reads_has_a_plain_name(ruleset):
    for route in ruleset.routes:
        for value_set in route.value_sets.values():
            assert value_set.title, f"{value_set.name}: add it under titles: in cards/valuesets/"
            assert value_set.title != value_set.name


def test_no_internal_id_is_shown_as_a_name(pages, ruleset):
    """Ids appear only as ``<code>`` references; headings are the rules' plain names."""
    ids = _ids(ruleset)
    for code, page in pages.items():
        shown = Shown(page)
        leaked = {i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", shown.text)}
        assert not leaked, (code, sorted(leaked))
        assert "value set '" not in shown.text
    for route in ruleset.routes:
        headings = Shown(pages[route.code]).headings
        for criterion in route.criteria.values():
            assert headings[f"h-{criterion.id}"] == rule_name(criterion, route)


def test_each_rule_is_one_sentence_that_says_something(explainer, ruleset):
    ids = _ids(ruleset)
    for route in ruleset.routes:
        for rule in explainer.models[route.code].rules:
            assert rule.when.endswith("."), (route.code, rule.id, rule.when)
            assert not re.search(r"\bRule \S+ holds\b", rule.when), (route.code, rule.id)
            said = " ".join([rule.when, *rule.details])
            assert not [i for i in ids if re.search(rf"\b{re.escape(i)}\b", said)], (
                route.code,
                rule.id,
                said,
            )


def test_a_rule_with_one_part_is_worded_as_that_part(explainer):
    """dvt-new holds when dvt-recent does (unless an anticoagulant): it is said as such."""
    rule = explainer.models["urgent-care"].by_id["dvt-new"]
    assert rule.name == "New deep vein thrombosis, not yet on an anticoagulant"
    assert rule.when == "Deep vein thrombosis on record in the last 14 days."
    assert rule.details[-1] == (
        "Unless any of these holds: anticoagulant ordered since the deep vein thrombosis."
    )


def test_a_rule_without_a_title_is_named_from_what_it_reads(ruleset):
    routes = {route.code: route for route in ruleset.routes}
    nephrology = routes["nephrology"]
    assert rule_name(nephrology.criteria["egfr-below-30"], nephrology) == (
        "eGFR below 30 mL/min/1.73m² in the last year"
    )
    assert rule_name(nephrology.criteria["ckd-stage-4-5"], nephrology) == (
        "Advanced chronic kidney disease (stage 4-5, kidney failure) on record"
    )
    review = routes["medication-review"]
    assert rule_name(review.criteria["loop-diuretic"], review) == "Loop diuretic on record"


def test_names_keep_abbreviations_inside_a_sentence():
    assert inner("Potassium below 3.5") == "potassium below 3.5"
    assert inner("A diuretic") == "a diuretic"
    for name in ("HbA1c above 9", "TSH above 10", "eGFR below 30", "D-dimer raised"):
        assert inner(name) == name


def test_pages_and_text_cite_only_what_a_reader_can_open(pages, capsys):
    for code, page in pages.items():
        assert not INTERNAL.search(page), (code, INTERNAL.search(page))
    assert main(["check-rules", "--explain"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert not INTERNAL.search(text), INTERNAL.search(text)
    # The public part of each citation stays: guideline and section.
    assert "KDIGO 2012/2024 CKD guideline, referral chapter: eGFR < 30" in text


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        (
            "ASH 2018 VTE diagnosis guideline; route-guide §8.8 (a DVT already anticoagulated "
            "is not a new emergency)",
            "ASH 2018 VTE diagnosis guideline; a DVT already anticoagulated is not a new emergency",
        ),
        (
            "ESE/ESICM/ERA-EDTA 2014 hyponatraemia guideline (route-guide §5.1)",
            "ESE/ESICM/ERA-EDTA 2014 hyponatraemia guideline",
        ),  # fmt: skip
        (
            "ATA 2016 hyperthyroidism guideline (route-guide §2.6, §8.3; TSH < 0.1 suppressed, "
            "rules-reference §9)",
            "ATA 2016 hyperthyroidism guideline (TSH < 0.1 suppressed)",
        ),
        (
            "Route-guide §8.9: cauda equina is an emergency the source article omits",
            "Cauda equina is an emergency the source article omits",
        ),  # fmt: skip
        (
            "ADA Standards of Care 2025 §12: EMG/NCS rarely needed unless atypical (issue 13); "
            "route-guide §2.2",
            "ADA Standards of Care 2025 §12: EMG/NCS rarely needed unless atypical",
        ),
        (
            "Route-guide §2.1 (b): primary care corrects electrolyte abnormalities (§8.6)",
            "Primary care corrects electrolyte abnormalities",
        ),  # fmt: skip
        ("KDIGO 2012/2024 referral chapter", "KDIGO 2012/2024 referral chapter"),
    ],
)
def test_internal_references_are_taken_out_of_a_citation(written, shown):
    assert public(written) == shown


def test_a_title_for_a_value_set_that_does_not_exist_is_refused(tmp_path):
    import shutil

    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / "valuesets" / "pregnancy.yaml"
    data = yaml.safe_load(path.read_text())
    data["titles"]["no-such-set"] = "Nothing"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RuleError, match="titles/no-such-set"):
        load_rules(cards)
