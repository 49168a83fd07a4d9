"""Named thresholds (issue 21): a clinical cut-off is defined once, under ``thresholds:`` in
cards/shared/, and every criterion comparing a result with it names it, keeping its own
window; check-rules refuses a literal copy, a second name, an unknown name or another
concept's, and ``--explain`` lists each named threshold once with the rules using it."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from cds_service.cli import main
from cds_service.engine import loader
from cds_service.engine.facts import Threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import cards_of, medication, normal_workup, observation  # noqa: E402
from rule_files import copy_cards, edit_yaml, refused  # noqa: E402
from vignettes import STATIN  # noqa: E402

CARDS = Path(__file__).resolve().parents[1] / "cards"
THRESHOLDS = CARDS / "shared" / "thresholds.yaml"
# The cut-offs issue 21 found written literally in more than one criterion, each with the
# criteria that now name it (route or shared file criterion id -> its own window in days).
CONVERTED = {
    "ck-very-high": {"ck-very-high": 3, "ck-very-high-30-days": 30},
    "lead-high-adult": {"lead-urgent-level-adult": 30, "lead-40-plus-adult": 90},
    "lead-high-child": {"lead-urgent-level-child": 30, "lead-45-plus-child": 90},
    # Not a converted copy: the adult urgent level (Kosnett 2007), read by two routes.
    "lead-urgent-adult": {"lead-80-plus-adult": 90},
    "egfr-g4-or-worse": {"egfr-below-30": 365, "egfr-below-30-sustained": 365},
}


def _observation_criteria():
    """(file, entry) of every observation criterion written in cards/."""
    for path in sorted(CARDS.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        for section in ("criteria", "building_blocks"):
            for entry in data.get(section) or []:
                if entry.get("type") == "observation":
                    yield path.relative_to(CARDS).as_posix(), entry


def test_no_cut_off_is_written_literally_twice_or_beside_its_name():
    named = yaml.safe_load(THRESHOLDS.read_text())["thresholds"]
    written: dict[tuple, list[str]] = defaultdict(list)
    for name, t in named.items():
        written[(t["concept"], t["comparator"], t["value"], t["unit"])].append(name)
    literal = 0
    for file, entry in _observation_criteria():
        t = entry["threshold"]
        if isinstance(t, dict):
            literal += 1
            written[(entry["concept"], t["comparator"], t["value"], t["unit"])].append(file)
    assert literal > 20  # the other cut-offs are each written once
    assert {k: v for k, v in written.items() if len(v) > 1} == {}


def test_the_duplicated_cut_offs_are_named_and_compile_exactly_as_written_before():
    ruleset = loader.load(CARDS)
    compiled = {c.id: c for route in ruleset.routes for c in route.criteria.values() if c.spec}
    before = {
        "ck-very-high": (Threshold(">=", 1000, "U/L"), ("HH", "AA"), None, None),
        "lead-high-adult": (Threshold(">=", 40, "ug/dL"), (), 18, None),
        "lead-high-child": (Threshold(">=", 45, "ug/dL"), (), None, 18),
        "lead-urgent-adult": (Threshold(">=", 80, "ug/dL"), (), 18, None),
        "egfr-g4-or-worse": (Threshold("<", 30, "mL/min/{1.73_m2}"), (), None, None),
    }
    for name, criteria in CONVERTED.items():
        assert set(ruleset.thresholds) >= {name}
        for criterion_id, days in criteria.items():
            c = compiled[criterion_id]
            assert c.spec["threshold"] == name and c.threshold_name == name
            assert (c.threshold, c.critical_flags, c.age_from, c.age_below) == before[name]
            assert c.window is not None and c.window.days == days
    assert compiled["egfr-below-30-sustained"].sustained.days == 90
    assert compiled["egfr-below-30"].estimate_from is not None


@pytest.mark.parametrize(("flag", "stop"), [("HH", True), ("AA", True), ("H", False)])
def test_the_30_day_ck_rule_keeps_the_named_critical_flags(flag, stop):
    """A statin with a CK of 10 days ago flagged critically high, no number: the 30-day
    rule counts it because the flags are the named threshold's, not a copy's."""
    ck = observation("2157-6", 0, "U/L", 10)
    del ck["valueQuantity"]
    system = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    ck["interpretation"] = [{"coding": [{"system": system, "code": flag}]}]
    cards = cards_of(medication(*STATIN), ck, *normal_workup())
    review = cards.get("medication-review", {})
    assert ("statin-with-very-high-ck" in str(review.get("links"))) is stop
    assert review.get("summary", "").startswith("Stop the statin") is stop
    assert "urgent-care" not in cards  # 10 days ago: not the 3-day urgent window


# ------------------------------------------------------------------- check-rules refuses


def _entry(data: dict, criterion_id: str) -> tuple[str, dict]:
    for section in ("criteria", "building_blocks"):
        for i, entry in enumerate(data.get(section) or []):
            if entry.get("id") == criterion_id:
                return f"{section}/{i}", entry
    raise AssertionError(criterion_id)


def _change_criterion(cards: Path, file: str, criterion_id: str, **changes) -> str:
    path = cards / file
    data = yaml.safe_load(path.read_text())
    where, entry = _entry(data, criterion_id)
    entry.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return f"{file}: field {where}"


@pytest.mark.parametrize(
    "literal",
    [
        {"comparator": ">=", "value": 1000, "unit": "U/L"},
        {"comparator": ">=", "value": 1000, "unit": "[IU]/L"},  # the same in another unit
    ],
)
def test_a_literal_copy_of_a_named_threshold_is_refused(tmp_path, capsys, literal):
    cards = copy_cards(tmp_path)
    where = _change_criterion(
        cards, "medication-review.yaml", "ck-very-high-30-days", threshold=literal
    )
    err = refused(cards, capsys)
    assert f"{where}/threshold:" in err
    assert "named threshold 'ck-very-high'" in err and "write `threshold: ck-very-high`" in err


def test_two_names_for_the_same_cut_off_are_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    copy = {"concept": "ck", "comparator": ">=", "value": 1000, "unit": "U/L"}
    edit_yaml(
        cards / "shared" / "thresholds.yaml", lambda d: d["thresholds"].update({"ck-x": copy})
    )
    err = refused(cards, capsys)
    assert (
        "shared/thresholds.yaml: field thresholds/ck-x: the same cut-off as 'ck-very-high'" in err
    )


@pytest.mark.parametrize(("ages", "same"), [({"from": 18}, True), ({"below": 18}, False)])
def test_the_same_value_for_other_ages_is_another_cut_off(tmp_path, capsys, ages, same):
    """Adult and child cut-offs may share a number: the ages are part of the definition."""
    cards = copy_cards(tmp_path)
    lead = {"concept": "blood-lead", "comparator": ">=", "value": 40, "unit": "ug/dL"}
    lead["ages"] = ages
    edit_yaml(
        cards / "shared" / "thresholds.yaml", lambda d: d["thresholds"].update({"lead-x": lead})
    )
    assert main(["check-rules", "--cards-dir", str(cards)]) == (1 if same else 0)
    err = capsys.readouterr().err
    assert ("the same cut-off as 'lead-high-adult'" in err) is same


def test_a_name_defined_in_two_shared_files_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    again = {"thresholds": {"ck-very-high": {"concept": "ck", "comparator": ">", "value": 1}}}
    again["thresholds"]["ck-very-high"]["unit"] = "U/L"
    (cards / "shared" / "zz-more.yaml").write_text(yaml.safe_dump(again))
    err = refused(cards, capsys)
    assert "shared/zz-more.yaml: field thresholds/ck-very-high: 'ck-very-high' is already" in err


def test_an_unknown_named_threshold_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    where = _change_criterion(cards, "nephrology.yaml", "egfr-below-30", threshold="egfr-low")
    err = refused(cards, capsys)
    assert f"{where}/threshold: unknown named threshold 'egfr-low'" in err


def test_a_threshold_of_another_concept_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    where = _change_criterion(cards, "nephrology.yaml", "egfr-below-30", threshold="ck-very-high")
    err = refused(cards, capsys)
    assert f"{where}/threshold: 'ck-very-high' is a ck threshold, not egfr" in err


@pytest.mark.parametrize(("key", "value"), [("critical_flags", ["HH"]), ("ages", {"from": 16})])
def test_a_rule_naming_a_threshold_may_not_change_it(tmp_path, capsys, key, value):
    cards = copy_cards(tmp_path)
    changes = {key: value}
    where = _change_criterion(cards, "medication-review.yaml", "ck-very-high-30-days", **changes)
    err = refused(cards, capsys)
    assert f"{where}/{key}: set by the named threshold 'ck-very-high'" in err


def test_a_named_threshold_in_a_unit_of_another_dimension_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    edit_yaml(
        cards / "shared" / "thresholds.yaml",
        lambda d: d["thresholds"]["egfr-g4-or-worse"].update(unit="mmol/L"),
    )
    err = refused(cards, capsys)
    assert "shared/thresholds.yaml: field thresholds/egfr-g4-or-worse/unit: 'mmol/L'" in err


def test_the_schema_refuses_a_named_threshold_without_a_value(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    edit_yaml(
        cards / "shared" / "thresholds.yaml",
        lambda d: d["thresholds"]["ck-very-high"].pop("value"),
    )
    err = refused(cards, capsys)
    assert "thresholds.yaml: field thresholds/ck-very-high" in err and "'value'" in err


# ------------------------------------------------------------------- check-rules --explain


def _section(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("Named thresholds (cards/shared/): each defined once")
    end = next(i for i in range(start + 2, len(lines)) if not lines[i].strip())
    return lines[start + 2 : end]


def test_explain_lists_each_named_threshold_once_with_every_rule_using_it(capsys):
    assert main(["check-rules", "--explain", "--cards-dir", str(CARDS)]) == 0
    section = _section(capsys.readouterr().out)
    heads = [line.split(":")[0].strip() for line in section if not line.startswith("    ")]
    assert heads == list(CONVERTED)  # each once, in file order
    text = " ".join(line.strip() for line in section)
    ck = text[text.index("ck-very-high:") : text.index("lead-high-adult:")]
    assert "Creatine kinase at or above (>=) 1000 U/L" in ck and "HH/AA" in ck
    for route, rule in [
        ("urgent-care", "ck-very-high (3 days)"),
        ("vascular", "ck-very-high (3 days)"),
        ("medication-review", "ck-very-high-30-days (30 days)"),
    ]:
        assert f"{route}: {rule}" in ck
    assert "statin-with-raised-ck" in ck and "statin-with-recent-very-high-ck" in ck
    lead = text[text.index("lead-high-adult:") : text.index("lead-high-child:")]
    assert "aged 18 or over" in lead
    assert "urgent-care: lead-urgent-level-adult (30 days)" in lead
    assert "primary-care-workup: lead-40-plus-adult (90 days)" in lead
    egfr = text[text.index("egfr-g4-or-worse:") :]
    assert "nephrology: egfr-below-30-sustained (365 days, sustained 90 days)" in egfr
