"""The coded value sets are defined once, in cards/valuesets/ (issue 11), and the sets that
are meant to nest stay nested, so the kind of drift issue 11 found (two "diabetes" sets, a
"CKD of any stage" set without stage 3A) cannot come back unnoticed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from cds_service.engine.terminology import canonical_system, normalise_code

CARDS = Path(__file__).resolve().parents[1] / "cards"


def _shared() -> dict[str, list[dict]]:
    sets: dict[str, list[dict]] = {}
    for path in sorted((CARDS / "valuesets").glob("*.yaml")):
        for name, entries in (yaml.safe_load(path.read_text()).get("value_sets") or {}).items():
            assert name not in sets, f"{path.name}: value set {name} defined twice"
            sets[name] = entries
    return sets


SHARED = _shared()


def _members(name: str) -> list[tuple[str, str, bool]]:
    out = []
    for entry in SHARED[name]:
        system = canonical_system(entry["system"])
        out.append(
            (system, normalise_code(system, str(entry["code"])), entry.get("match") == "prefix")
        )
    return out


def _covered(member: tuple[str, str, bool], container: list[tuple[str, str, bool]]) -> bool:
    system, code, is_prefix = member
    for c_system, c_code, c_prefix in container:
        if c_system != system:
            continue
        if c_prefix and code.startswith(c_code):
            return True
        if not c_prefix and not is_prefix and code == c_code:
            return True
    return False


def test_route_files_define_no_value_sets_of_their_own():
    for path in sorted(CARDS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert "value_sets" not in data, f"{path.name}: move its value sets to cards/valuesets/"


def test_shared_value_sets_exist():
    assert len(SHARED) > 30


# (inner, outer): every code of inner is in outer (exactly, or under one of outer's prefixes).
NESTED = [
    ("ckd-advanced", "ckd-stage-3-plus"),
    ("ckd-stage-3-plus", "ckd-any"),
    ("diabetic-neuropathy", "diabetes"),
    ("diabetes-uncontrolled", "diabetes"),
    ("hypothyroidism", "thyroid-disease"),
    ("hyperthyroidism", "thyroid-disease"),
    ("thyroid-storm", "hyperthyroidism"),
    ("spinal-stenosis", "spinal"),
    ("disc-herniation", "spinal"),
    ("radiculopathy", "spinal"),
    ("arterial-occlusion-leg", "arterial-occlusion-acute"),
]


@pytest.mark.parametrize("inner, outer", NESTED)
def test_nested_value_sets_stay_nested(inner, outer):
    missing = [m for m in _members(inner) if not _covered(m, _members(outer))]
    assert not missing, f"{inner} has codes that {outer} lacks: {missing}"


# Sets that are exactly the union of others (a code added to a part must reach the whole).
UNIONS = [
    ("thyroid-disease", ["hypothyroidism", "hyperthyroidism"]),
    ("spinal", ["spinal-stenosis", "disc-herniation", "radiculopathy"]),
]


@pytest.mark.parametrize("whole, parts", UNIONS)
def test_union_value_sets_hold_nothing_else(whole, parts):
    union = [m for part in parts for m in _members(part)]
    extra = [m for m in _members(whole) if not _covered(m, union)]
    assert not extra, f"{whole} has codes none of {parts} has: {extra}"


# --- the cards behind the merges of issue 11 (routes_helpers builds the requests)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from routes_helpers import cards_of, condition, normal_workup, observation  # noqa: E402

PCW = "primary-care-workup"


def test_a_recent_occupational_toxic_exposure_gets_a_blood_lead_not_silence():
    """Z57.5 was in primary care's lead-exposure set but not urgent care's: coded in the last
    30 days it was "urgent care's" for primary care and unknown to urgent care: no card."""
    cards = cards_of(condition("Z57.5", onset=10), *normal_workup())
    assert "urgent-care" not in cards  # not lead-specific: no same-day card
    assert "ICD-10-CM Z57.5" in cards[PCW]["detail"]
    assert "blood lead" in cards[PCW]["detail"].lower()


def test_a_recent_coded_lead_exposure_is_urgent_care_only():
    cards = cards_of(condition("Z77.011", onset=10), *normal_workup())
    assert cards["urgent-care"]["indicator"] == "critical"
    assert "Z77.011" not in cards.get(PCW, {}).get("detail", "")


@pytest.mark.parametrize("code", ["E87.5", "14140009", "E87.8", "105593004"])
def test_a_coded_hyperkalemia_or_electrolyte_imbalance_without_ckd_reaches_primary_care(code):
    cards = cards_of(condition(code, onset=10), *normal_workup())
    assert code in cards[PCW]["detail"]
    with_ckd = cards_of(condition(code, onset=10), condition("N18.31"), *normal_workup())
    assert code not in with_ckd.get(PCW, {}).get("detail", "")  # CKD G3+: nephrology's


@pytest.mark.parametrize("code", ["424736006", "368581000119106", "421326000"])
def test_a_snomed_diabetic_neuropathy_is_diabetes_for_primary_care(code):
    """Before issue 11 primary care's diabetes set lacked these: a diabetic-range HbA1c was
    reported as "no diabetes coded"."""
    cards = cards_of(
        condition(code, onset=400), observation("4548-4", 7.2, "%", 20), *normal_workup()
    )
    assert "no diabetes coded" not in cards.get(PCW, {}).get("detail", "")


@pytest.mark.parametrize("code", ["700378005", "90688005"])
def test_every_stage_3_plus_ckd_code_is_a_workup_risk_condition(code):
    """ckd-any ("CKD of any stage") lacked these stage 3+ codes before issue 11."""
    cards = cards_of(condition(code), normal_workup()[0], cramp_onset=200)  # only potassium
    assert code in cards[PCW]["detail"]


@pytest.mark.parametrize("code", ["236435004", "Z99.2"])
def test_the_dialysis_codes_ask_the_dialysis_unit_for_the_labs(code):
    """On dialysis the unit draws the monthly labs (review 10, W1): the dialysis card asks
    for them, and the workup card orders none."""
    cards = cards_of(condition(code), cramp_onset=200)  # no labs on record at all
    assert PCW not in cards
    assert (
        "Ask the dialysis unit for the latest potassium from its monthly labs"
        in cards["nephrology"]["detail"]
    )
