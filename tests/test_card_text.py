"""What a clinician reads on a card (issue 22): the card's own guideline as its source, each
finding once in the unit recorded (and the threshold's), no raw UCUM, summaries composed to
fit, plain override reasons and US wording; and the diabetic polyneuropathy neurology card.
Firing and near-miss for each; ``card_text_checks.text_problems`` over every example, shared
chart and vignette."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from card_text_checks import evidence_lines, shipped_rules, text_problems  # noqa: E402
from corpus import everyone  # noqa: E402
from golden_cards import current  # noqa: E402
from routes_helpers import (  # noqa: E402
    cards_of,
    condition,
    medication,
    normal_workup,
    observation,
)
from test_value_sets import _covered, _members  # noqa: E402

from cds_service.engine import units  # noqa: E402
from cds_service.engine.facts import Quantity  # noqa: E402
from cds_service.render import quantities  # noqa: E402

CARDS = Path(__file__).resolve().parents[1] / "cards"
LONG_DVT = "Acute embolism and thrombosis of unspecified deep veins of right lower extremity"


# --- the whole corpus


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[dict]]:
    """The golden cards (examples and shared charts on their own dates) and tests/corpus.py's
    patients (examples, shared charts a week after their newest entry, the plan's vignettes)."""
    return {**current(), **{p.label: p.cards for p in everyone()}}


def test_no_text_problem_on_any_example_or_shared_chart(corpus):
    problems = [f"{case}: {p}" for case, cards in corpus.items() for p in text_problems(cards)]
    assert not problems, "\n".join(problems[:20])
    assert sum(len(cards) for cards in corpus.values()) > 50  # the corpus was read


def test_every_rule_that_makes_a_card_names_its_own_guideline_link():
    unlinked = []
    for route in shipped_rules().routes:
        for criterion in route.criteria.values():
            if not criterion.fires or criterion.context:
                continue
            name = route.content_of.get(criterion.id)
            if name is None or not route.content[name].links:
                unlinked.append(f"{route.code}/{criterion.id}")
    assert not unlinked


# --- 1. source.url: the most severe fired rule's link


def test_the_source_is_the_most_severe_fired_rules_guideline():
    card = cards_of(
        condition("I70.221", 200), observation("446841001", 0.35, "1", 5, system="snomed")
    )
    vascular = card["vascular"]
    assert "jvascsurg.org" in vascular["source"]["url"]  # CLTI, not the route's first (PAD) link
    assert vascular["links"][0]["url"] == vascular["source"]["url"]
    assert not text_problems([vascular])


def test_a_furosemide_card_cites_its_own_reference_not_the_statin_guideline():
    card = cards_of(medication(None, "furosemide 40 MG Oral Tablet"), *normal_workup())
    source = card["medication-review"]["source"]["url"]
    assert source == "https://pubmed.ncbi.nlm.nih.gov/22963024/"  # Allen & Kirby, AFP 2012


def test_near_miss_a_statin_card_cites_the_cholesterol_guideline():
    card = cards_of(medication(None, "atorvastatin 20 MG Oral Tablet"), *normal_workup())
    assert "CIR.0000000000000625" in card["medication-review"]["source"]["url"]


def test_near_miss_a_pad_card_points_to_the_pad_guideline():
    card = cards_of(observation("446841001", 0.72, "1", 5, system="snomed"))["vascular"]
    assert "ahajournals.org/doi/10.1161/CIR.0000000000001251" in card["source"]["url"]


def test_the_checker_finds_a_card_pointing_at_another_rules_guideline():
    card = cards_of(observation("446841001", 0.72, "1", 5, system="snomed"))["vascular"]
    card["source"]["url"] = "https://diabetesjournals.org/care/issue/48/Supplement_1"
    assert any("source.url" in p for p in text_problems([card]))


# --- 2. evidence lines


def test_a_magnesium_in_mg_dl_is_also_shown_in_the_thresholds_mmol_l():
    card = cards_of(observation("19123-9", 1.5, "mg/dL", 5))["primary-care-workup"]
    line = next(line for line in evidence_lines(card["detail"]) if line.startswith("Magnesium"))
    assert "1.5 mg/dL (0.62 mmol/L)" in line and "threshold < 0.7 mmol/L" in line
    assert "(0.62" not in card["summary"]  # the summary keeps the unit recorded only


def test_near_miss_a_potassium_in_the_thresholds_unit_is_shown_once():
    card = cards_of(observation("2823-3", 3.1, "mmol/L", 5))["primary-care-workup"]
    line = next(line for line in evidence_lines(card["detail"]) if line.startswith("Potassium"))
    assert "3.1 mmol/L on" in line and "mmol/L (" not in line


def test_an_abi_sent_as_ratio_has_no_empty_unit_and_no_annotation():
    card = cards_of(observation("446841001", 0.48, "{ratio}", 5, system="snomed"))["vascular"]
    line = evidence_lines(card["detail"])[0]
    assert "0.48" in line and "{" not in line and "used as" not in line
    assert not line.endswith(" ") and not text_problems([card])


@pytest.mark.parametrize(
    "unit, words",
    [
        ("ng/mL{FEU}", "ng/mL FEU"),
        ("ug{FEU}/mL", "µg/mL FEU"),
        ("{ratio}", ""),
        ("1", ""),
        ("mL/min/{1.73_m2}", "mL/min/1.73m²"),
        ("{cells}/uL", "cells/uL"),
        ("mmol/L", "mmol/L"),  # near miss: a plain unit stays as it is
    ],
)
def test_ucum_annotations_are_read_as_words(unit, words):
    assert units.display_label(unit) == words


def test_a_d_dimer_in_ng_ml_feu_is_reported_in_words():
    d_dimer = shipped_rules().concepts["d-dimer"]
    said = quantities.as_reported(
        d_dimer, Quantity(value=900.0, unit="ng/mL{FEU}", code="ng/mL{FEU}")
    )
    assert said == "; reported as 900 ng/mL FEU, used as ng/mL"
    recorded = quantities.as_recorded(Quantity(value=900.0, unit="ng/mL{FEU}"))
    assert recorded == "900 ng/mL FEU"


def test_the_same_egfr_from_two_rules_is_one_line_and_counted_once():
    card = cards_of(
        condition("N18.4", 300),
        observation("98979-8", 25, "mL/min/{1.73_m2}", 10),
        observation("98979-8", 26, "mL/min/{1.73_m2}", 100),
    )["nephrology"]
    egfr = [line for line in evidence_lines(card["detail"]) if line.startswith("eGFR")]
    assert len(egfr) == 1 and "sustained" in egfr[0]
    assert "more)" not in card["summary"]


def test_near_miss_two_different_results_stay_two_lines():
    card = cards_of(
        condition("N18.4", 300),
        observation("98979-8", 25, "mL/min/{1.73_m2}", 10),
        observation("2823-3", 5.9, "mmol/L", 10),
    )["nephrology"]
    lines = evidence_lines(card["detail"])
    assert any(x.startswith("eGFR") for x in lines) and any(
        x.startswith("Potassium") for x in lines
    )


def test_the_checker_finds_a_repeated_line_and_an_empty_unit():
    card = {
        "summary": "s",
        "detail": "**Evidence**\n- eGFR 25 (LOINC 1); x\n- eGFR 25 (LOINC 1); y\n"
        "- ABI 0.48 (SNOMED CT 1; reported as 0.48 {ratio}, used as ); threshold",
    }
    problems = " ".join(text_problems([card]))
    assert "same finding" in problems and "empty unit" in problems and "raw UCUM" in problems


def test_the_checker_finds_a_summary_counting_a_copy():
    card = {"summary": "Refer: eGFR 25 (+1 more)", "detail": "**Evidence**\n- eGFR 25 (LOINC 1)"}
    assert any("counts 2 findings" in p for p in text_problems([card]))


# --- 3. summaries: short clinical names, never cut


def test_a_long_dvt_display_is_named_by_its_short_name():
    card = cards_of(condition("I82.401", 3, display=LONG_DVT))["urgent-care"]
    assert card["summary"].endswith("acute DVT")
    assert "…" not in card["summary"] and len(card["summary"]) < 100
    assert LONG_DVT in card["detail"]  # the evidence keeps the full display


def test_near_miss_a_display_that_fits_is_shown_as_recorded():
    card = cards_of(condition("I82.411", 3, display="Acute DVT of right femoral vein"))
    assert card["urgent-care"]["summary"].endswith("Acute DVT of right femoral vein")


def test_near_miss_a_lab_finding_keeps_its_value_in_the_summary():
    card = cards_of(observation("19123-9", 1.5, "mg/dL", 5))["primary-care-workup"]
    assert "Magnesium 1.5 mg/dL" in card["summary"]


def test_every_coded_rule_that_makes_a_card_has_a_short_name():
    unnamed = []
    for route in shipped_rules().routes:
        for criterion in route.criteria.values():
            coded = criterion.type_name in {"condition", "procedure"}
            if coded and criterion.fires and not criterion.context and not criterion.short_name:
                unnamed.append(f"{route.code}/{criterion.id}")
    assert not unnamed


# --- 4. words: override reasons, US spelling

BRITISH = re.compile(
    r"\b\w*(aemia|aemic|haem\w*|oedema|anaesth\w*|centre|programme|diarrhoea|organis\w*|"
    r"colour|paediatr\w*)\b|Accident and Emergency",
    re.IGNORECASE,
)
SHOWN = {"summary", "next_step", "caveats", "label", "why", "action", "text", "display"}


def _shown_text(node, key=None):
    if isinstance(node, dict):
        if "system" in node and "code" in node:  # a code's display is the terminology's
            return
        for k, value in node.items():
            if k not in {"words", "recognised_by", "referral_other_specialties"}:
                yield from _shown_text(value, k)
    elif isinstance(node, list):
        for item in node:
            yield from _shown_text(item, key)
    elif isinstance(node, str) and key in SHOWN:
        yield node


def test_text_shown_to_clinicians_uses_us_spelling():
    found = []
    for path in sorted(CARDS.glob("*.yaml")):
        for text in _shown_text(yaml.safe_load(path.read_text())):
            found += [f"{path.name}: {m.group(0)}" for m in BRITISH.finditer(text)]
    assert not found


def test_override_reasons_are_plain_clinical_labels_with_the_specs_codes():
    card = cards_of(condition("I82.401", 3))["urgent-care"]
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert {"cds-not-applicable", "recipient-disagrees-evidence", "cds-suboptimal-context"} <= set(
        reasons
    )
    assert not any("PC CDS" in display or "CDS" in display for display in reasons.values())
    assert reasons["cds-not-applicable"] == "Does not apply to this patient"


def test_the_emergency_referral_reads_emergency_department():
    card = cards_of(condition("I82.401", 3))["urgent-care"]
    action = card["suggestions"][0]["actions"][0]
    assert "emergency department" in action["description"]
    assert "Accident" not in action["description"]
    assert action["resource"]["code"]["text"] == "Referral to emergency department physician"
    assert action["resource"]["code"]["coding"][0]["code"] == "306254002"  # the code stays


# --- 5. diabetic polyneuropathy: a neurology card


def test_diabetic_polyneuropathy_sits_inside_diabetic_neuropathy():
    outer = _members("diabetic-neuropathy")
    assert all(_covered(m, outer) for m in _members("diabetic-polyneuropathy"))


@pytest.mark.parametrize("code", ["E11.42", "E10.42", "E13.42", "713706002"])
def test_a_recent_diabetic_polyneuropathy_with_controlled_diabetes_is_information(code):
    cards = cards_of(condition(code, 100), observation("4548-4", 6.8, "%", 30), *normal_workup())
    card = cards["neurology"]
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Consider neurology: ")
    assert "neuropathy" in card["summary"] and "HbA1c 6.8 %" in card["summary"]
    assert "Section 12" in card["links"][0]["label"].title()
    assert not text_problems([card])


def test_a_recent_diabetic_polyneuropathy_with_poor_control_is_one_endocrinology_card():
    """Route-guide §2.2: both suggestions on one card; the endocrinology card leads
    (tests/test_diabetic_neuropathy.py has the rest)."""
    cards = cards_of(
        condition("E11.42", 100), observation("4548-4", 9.6, "%", 30), *normal_workup()
    )
    assert list(cards) == ["endocrinology"]
    assert cards["endocrinology"]["summary"] == (
        "Refer to endocrinology and neurology: diabetic polyneuropathy; HbA1c 9.6 % on 2026-10-25"
    )
    assert not text_problems(list(cards.values()))


def test_a_recent_diabetic_polyneuropathy_without_an_hba1c_is_a_warning():
    cards = cards_of(condition("E10.42", 100), *normal_workup())
    assert cards["neurology"]["indicator"] == "warning"


@pytest.mark.parametrize(
    "resources",
    [
        [condition("E11.42", 400), observation("4548-4", 6.8, "%", 30)],  # older than a year
        [condition("E11.43", 100), observation("4548-4", 6.8, "%", 30)],  # autonomic
        [condition("E11.9", 100), observation("4548-4", 6.8, "%", 30)],  # no neuropathy
    ],
)
def test_near_miss_no_neurology_card(resources):
    assert "neurology" not in cards_of(*resources, *normal_workup())


# --- the summary's last resort


def _result(route_code: str, displays: list[str], criterion: str):
    from cds_service.engine.facts import CodedProblem, Fact, RouteResult
    from cds_service.engine.terminology import Concept

    route = next(r for r in shipped_rules().routes if r.code == route_code)
    facts = [
        Fact(
            criterion,
            CodedProblem(Concept("http://snomed.info/sct", str(i), d), "active", None, None),
        )
        for i, d in enumerate(displays)
    ]
    return RouteResult(route, facts, [], [criterion], "warning", None, None)


def test_a_finding_too_long_for_any_summary_points_to_the_evidence():
    from cds_service.render.cards import summary_for

    unnamed = _result("neurology", ["x" * 120], "no-such-rule")  # no short name to fall back on
    assert summary_for(unnamed) == "Refer to neurology: see the evidence"


def test_near_miss_a_long_display_with_a_short_name_is_named():
    from cds_service.render.cards import summary_for

    named = _result("neurology", ["Polyneuropathy " + "y" * 100, "Other " + "z" * 90], "neuropathy")
    assert summary_for(named) == "Refer to neurology: new neuropathy"
