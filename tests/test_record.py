"""The record's lazy reading: the code index, lazy screening of results, the validation memo."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from cds_service.config import Settings
from cds_service.engine import load_rules
from cds_service.engine.record import Record
from cds_service.engine.terminology import ICD10CM, LOINC, CodeIndex, Concept, ValueSet

NOW = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture(scope="module")
def ruleset():
    return load_rules(Settings.from_env({}).cards_dir)


def _potassium(rid: str, value: float, day: str, **extra) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2823-3"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": day,
        "valueQuantity": {
            "value": value,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }
    resource.update(extra)
    return resource


def test_code_index_prefers_an_exact_member_and_matches_icd_prefixes_in_any_spelling():
    exact = Concept(ICD10CM, "I82.401", "Acute embolism of right femoral vein")
    prefix = Concept(ICD10CM, "I82.4", "Acute DVT of lower extremity")
    both = ValueSet("both", [exact], [prefix])
    only_prefix = ValueSet("prefix", [], [prefix])
    index = CodeIndex([both, only_prefix])
    assert index.owners(ICD10CM, "i82401") == ((both, exact), (only_prefix, prefix))
    assert index.owners(ICD10CM, "I82.409") == ((both, prefix), (only_prefix, prefix))
    assert index.owners(ICD10CM, "I82.5") == ()
    assert index.owners(ICD10CM, ["I82.401"]) == ()  # malformed coding: no match, no crash


def test_a_value_set_outside_the_index_is_a_programming_error(ruleset):
    record = Record("p1", [], NOW, ruleset.codes)
    with pytest.raises(KeyError):
        record.find("Condition", ValueSet("stray", [Concept(LOINC, "2823-3", "K")], []))


def test_a_malformed_or_foreign_result_is_skipped_and_the_next_newest_decides(ruleset):
    potassium = ruleset.concepts["potassium"]
    resources = [
        _potassium("old", 4.0, "2026-10-01"),
        _potassium("foreign", 2.0, "2026-11-23", subject={"reference": "Patient/p2"}),
        _potassium("broken", 2.1, "2026-11-22", status=["final"]),
    ]
    record = Record("p1", resources, NOW, ruleset.codes)
    results = record.labs.results_in(potassium, {"final"}, None)
    assert [r[2]["id"] for r in results] == ["old"] and results[0][1] == 4.0
    assert record.left_out == 2


def test_results_are_read_lazily_newest_first(ruleset):
    potassium = ruleset.concepts["potassium"]
    resources = [_potassium(f"k{day}", 4.0, f"2026-11-{day:02d}") for day in range(1, 21)]
    record = Record("p1", resources, NOW, ruleset.codes)
    newest = record.labs.newest_result(potassium, {"final"})
    assert newest[2]["id"] == "k20"
    readings = [key for key in record.memo if key[:2] == ("reading", "potassium")]
    assert len(readings) == 1  # only the result a rule reached was read
    assert record.left_out == 0


def test_an_invalid_resource_is_reported_on_every_call_although_its_verdict_is_memoised(
    ruleset, caplog
):
    broken = _potassium("k1", 2.1, "2026-11-23", subject={"reference": 5})
    for _ in range(2):
        caplog.clear()
        record = Record("p1", [dict(broken)], NOW, ruleset.codes)
        with caplog.at_level(logging.WARNING, logger="cds_service.engine.record"):
            assert record.is_valid(record.received["Observation"][0]) is False
        assert "invalid Observation" in caplog.text
    fixed = _potassium("k1", 2.1, "2026-11-23")
    assert Record("p1", [fixed], NOW, ruleset.codes).is_valid(fixed) is True
