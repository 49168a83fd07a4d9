"""Clinical behaviour of every referral route (cards/*.yaml), end to end through the service.

Today is fixed to 2026-11-24. The worst defects are a missed urgent card and an invented
one, so each red flag is tested alone, and next to it the near miss on the safe side of its
threshold or window, and the stale / resolved / refuted / entered-in-error variants.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (  # noqa: E402
    ROUTES,
    TODAY,
    condition,
    cramp,
    day,
    evaluate,  # noqa: E402
    hook_request,
    medication,
    normal_workup,
    observation,
    patient,
    referral_resources,
    route_of,
    service,
    service_request,
)

from cds_service.config import Settings  # noqa: E402
from cds_service.protocol import hooks  # noqa: E402
from cds_service.web.app import create_app  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir_examples"
RANK = {"critical": 2, "warning": 1, "info": 0}


def check_response(response: dict) -> None:
    """Every response obeys the CDS Hooks schema and the house rules for cards."""
    errors = list(hooks.validator("cds-response").iter_errors(response))
    assert not errors, errors[0].message
    ranks = [RANK[c["indicator"]] for c in response["cards"]]
    assert ranks == sorted(ranks, reverse=True), "cards must be ordered critical, warning, info"
    routes = [route_of(c) for c in response["cards"]]
    assert len(routes) == len(set(routes)), "at most one card per route"
    for card in response["cards"]:
        assert len(card["summary"]) < 100
        assert card["detail"].startswith("**Evidence**")
        assert len(card["detail"]) <= 900
        assert len(card.get("links", [])) <= 2
        *guidelines, explanation = card["links"]
        assert all(link["url"].startswith("https://") for link in guidelines)
        route = card["source"]["topic"]["code"]
        if route not in ROUTES:  # an order card of its own topic: the route it is about
            assert re.match(
                r"^https?://[^/?#]+/explain/[a-z-]+(\?rules=[a-z0-9,-]+)?$", explanation["url"]
            )
            continue
        assert re.match(
            rf"^https?://[^/?#]+/explain/{route}\?rules=[a-z0-9,-]+$", explanation["url"]
        )


def run(*resources, **kwargs) -> dict[str, dict]:
    response = evaluate(hook_request(*resources, **kwargs))
    check_response(response)
    return {route_of(card): card for card in response["cards"]}


def urgent(*resources) -> dict | None:
    return run(*resources, *normal_workup()).get("urgent-care")


# ----------------------------------------------------------------------------- the gate


def test_no_leg_cramp_problem_means_no_cards_even_with_red_flags():
    assert (
        run(condition("I82.401", onset=2), observation("2823-3", 2.1, "mmol/L"), gate=False) == {}
    )


@pytest.mark.parametrize(
    "status",
    [
        {"clinical": "resolved"},
        {"clinical": "inactive"},
        {"verification": "refuted"},
        {"verification": "entered-in-error"},
    ],
)
def test_resolved_or_wrong_cramp_problem_closes_the_gate(status):
    cards = run(cramp(**status), condition("I82.401", onset=2), gate=False)
    assert cards == {}


@pytest.mark.parametrize(
    "code",
    [
        "55300003",
        "424647005",
        "449918009",
        "102549009",
        "90392009",
        "R25.2",
        "G47.62",
        "M62.831",
        "M62.838",
    ],
)
def test_every_cramp_code_opens_the_gate(code):
    cards = run(cramp(code), condition("I82.401", onset=2), gate=False)
    assert "urgent-care" in cards


def test_restless_legs_is_not_a_cramp():
    assert run(condition("G25.81", onset=10), condition("I82.401", onset=2), gate=False) == {}


# ----------------------------------------------------------------------------- urgent care

URGENT_FLAGS = {
    "dvt snomed lower extremity": ([condition("404223003", onset=3)], "SNOMED CT 404223003"),
    "dvt snomed": ([condition("128053003", onset=0)], "SNOMED CT 128053003"),
    "postoperative dvt": ([condition("213220000", onset=14)], "SNOMED CT 213220000"),
    "dvt icd prefix": ([condition("I82.411", onset=13)], "ICD-10-CM I82.411"),
    "dvt icd undotted": ([condition("I824Z2", onset=5)], "ICD-10-CM I82.4Z2"),
    "dvt recorded only": ([condition("I82.409", onset=None, recorded=2)], "ICD-10-CM I82.409"),
    # Onset OR recorded date within 14 days (route-guide §1.3), even with an older onset.
    "dvt onset old though recorded recently": (
        [condition("I82.401", onset=40, recorded=2)],
        "ICD-10-CM I82.401",
    ),
    # A date that cannot be true (in the future) is no date: an acute DVT counts as new.
    "dvt dated in the future": ([condition("I82.401", onset=-5)], "ICD-10-CM I82.401"),
    "dvt with no date at all": ([condition("I82.401", onset=None)], "ICD-10-CM I82.401"),
    "arterial embolism": ([condition("54687002", onset=1)], "SNOMED CT 54687002"),
    "leg artery occlusion": ([condition("405557003", onset=1)], "SNOMED CT 405557003"),
    "leg artery thrombosis icd": ([condition("I74.3", onset=10)], "ICD-10-CM I74.3"),
    "extremity artery thrombosis icd": ([condition("I74.4", onset=10)], "ICD-10-CM I74.4"),
    "fever 38.0 Cel": ([observation("8310-5", 38.0, "Cel", 0)], "LOINC 8310-5"),
    "fever 100.4 degF": ([observation("8331-1", 100.4, "[degF]", 2)], "LOINC 8331-1"),
    "fever 39.4 tympanic": ([observation("8333-7", 39.4, "Cel", 3)], "LOINC 8333-7"),
    "fever coded snomed": ([condition("386661006", onset=2)], "SNOMED CT 386661006"),
    "fever coded icd": ([condition("R50.9", onset=1)], "ICD-10-CM R50.9"),
    "confusional state": ([condition("286933003", onset=4)], "SNOMED CT 286933003"),
    "altered mental status": ([condition("419284004", onset=4)], "SNOMED CT 419284004"),
    "delirium": ([condition("2776000", onset=14)], "SNOMED CT 2776000"),
    "disorientation icd": ([condition("R41.0", onset=1)], "ICD-10-CM R41.0"),
    "altered mental status icd": ([condition("R41.82", onset=1)], "ICD-10-CM R41.82"),
    "potassium 2.4": ([observation("2823-3", 2.4, "mmol/L", 1)], "LOINC 2823-3"),
    "potassium 6.5": ([observation("6298-4", 6.5, "mmol/L", 7)], "LOINC 6298-4"),
    "potassium 6.8 meq/L": ([observation("2823-3", 6.8, "meq/L", 1)], "LOINC 2823-3"),
    "sodium 124": ([observation("2951-2", 124, "mmol/L", 2)], "LOINC 2951-2"),
    "magnesium 0.49 mmol/L": ([observation("2601-3", 0.49, "mmol/L", 2)], "LOINC 2601-3"),
    "magnesium 1.1 mg/dL": ([observation("19123-9", 1.1, "mg/dL", 2)], "LOINC 19123-9"),
    "magnesium mg/dL under the molar code": (
        [observation("2601-3", 1.0, "mg/dL", 2)],
        "LOINC 2601-3",
    ),
    "calcium 6.9 mg/dL": ([observation("17861-6", 6.9, "mg/dL", 1)], "LOINC 17861-6"),
    "calcium 1.70 mmol/L": ([observation("17861-6", 1.70, "mmol/L", 1)], "LOINC 17861-6"),
    "rhabdomyolysis snomed": ([condition("240131006", onset=5)], "SNOMED CT 240131006"),
    "rhabdomyolysis icd": ([condition("M62.82", onset=5)], "ICD-10-CM M62.82"),
    "ck 1000": ([observation("2157-6", 1000, "U/L", 1)], "LOINC 2157-6"),
    "ck 24000": ([observation("2157-6", 24000, "U/L", 3)], "LOINC 2157-6"),
    # --- added by the clinical review
    "iliac artery thrombosis": ([condition("I74.5", onset=3)], "ICD-10-CM I74.5"),
    "aortic saddle embolus": ([condition("I74.01", onset=1)], "ICD-10-CM I74.01"),
    "abdominal aorta thrombosis": ([condition("I74.09", onset=14)], "ICD-10-CM I74.09"),
    "femoral vein thrombophlebitis": ([condition("I80.11", onset=5)], "ICD-10-CM I80.11"),
    "deep vessels thrombophlebitis unspecified": (
        [condition("I80.201", onset=5)],
        "ICD-10-CM I80.201",
    ),
    "popliteal vein thrombophlebitis": ([condition("I80.221", onset=5)], "ICD-10-CM I80.221"),
    "other deep vessels thrombophlebitis": ([condition("I80.299", onset=14)], "ICD-10-CM I80.299"),
    "deep phlebothrombosis in pregnancy": ([condition("O22.33", onset=2)], "ICD-10-CM O22.33"),
    "deep phlebothrombosis unspecified trimester undotted": (
        [condition("O2230", onset=2)],
        "ICD-10-CM O22.30",
    ),
    "deep phlebothrombosis in the puerperium": ([condition("O87.1", onset=10)], "ICD-10-CM O87.1"),
    "drug induced fever": ([condition("R50.2", onset=1)], "ICD-10-CM R50.2"),
    "postprocedural fever": ([condition("R50.82", onset=3)], "ICD-10-CM R50.82"),
    "fever preliminary": (
        [observation("8310-5", 39.0, "Cel", 0, status="preliminary")],
        "LOINC 8310-5",
    ),
    "fever masked by an antipyretic": (
        [observation("8310-5", 38.6, "Cel", 2), observation("8310-5", 36.9, "Cel", 1)],
        "LOINC 8310-5",
    ),
    "delirium due to known physiological condition": ([condition("F05", onset=3)], "ICD-10-CM F05"),
    "cauda equina syndrome": ([condition("G83.4", onset=2)], "ICD-10-CM G83.4"),
    "potassium 2.3 preliminary": (
        [observation("2823-3", 2.3, "mmol/L", 0, status="preliminary")],
        "LOINC 2823-3",
    ),
    "sodium 121 preliminary": (
        [observation("2951-2", 121, "mmol/L", 1, status="preliminary")],
        "LOINC 2951-2",
    ),
    "ck 3000 preliminary": (
        [observation("2157-6", 3000, "U/L", 1, status="preliminary")],
        "LOINC 2157-6",
    ),
    "ionized calcium 0.75 serum": ([observation("1995-0", 0.75, "mmol/L", 1)], "LOINC 1995-0"),
    "ionized calcium 0.79 blood preliminary": (
        [observation("1994-3", 0.79, "mmol/L", 0, status="preliminary")],
        "LOINC 1994-3",
    ),
    "corrected calcium 1.70 mmol/L": ([observation("29265-6", 1.70, "mmol/L", 2)], "LOINC 29265-6"),
}
URGENT_FLAGS.update(
    {
        f"thyroid storm {code}": ([condition(code, onset=3)], f"ICD-10-CM {code}")
        for code in ("E05.01", "E05.11", "E05.21", "E05.31", "E05.41", "E05.81", "E05.91")
    }
)


# Lead (route-guide §8.7, the article wins): a blood lead >= 40 ug/dL (children >= 45) or a
# lead exposure or poisoning coded in the last 30 days is a same-day evaluation, which need
# not be the emergency department (priority urgent, not stat).
LEAD_FLAGS = {
    "lead 80 ug/dL": ([observation("5671-3", 80, "ug/dL", 30)], "LOINC 5671-3"),
    "lead 40 ug/dL": ([observation("5671-3", 40, "ug/dL", 30)], "LOINC 5671-3"),
    "lead 79.9 ug/dL": ([observation("5671-3", 79.9, "ug/dL", 10)], "LOINC 5671-3"),
    "lead 2.5 umol/L": ([observation("10368-9", 2.5, "umol/L", 10)], "LOINC 10368-9"),
    "lead 3.9 umol/L capillary": ([observation("10368-9", 3.9, "umol/L", 20)], "LOINC 10368-9"),
    "lead poisoning snomed": ([condition("1145155005", onset=30)], "SNOMED CT 1145155005"),
    "lead toxic effect accidental": ([condition("T56.0X1A", onset=20)], "ICD-10-CM T56.0X1A"),
    "lead toxic effect undetermined": ([condition("T56.0X4A", onset=20)], "ICD-10-CM T56.0X4A"),
    "lead exposure icd": ([condition("Z77.011", onset=30)], "ICD-10-CM Z77.011"),
    "lead exposure snomed": ([condition("242374007", onset=3)], "SNOMED CT 242374007"),
    "abnormal lead level coded, measured 52": (
        [condition("R78.71", onset=10), observation("5671-3", 52, "ug/dL", 10)],
        "LOINC 5671-3",
    ),
}


@pytest.mark.parametrize("name", sorted(LEAD_FLAGS))
def test_lead_with_cramps_is_a_same_day_evaluation(name):
    resources, code = LEAD_FLAGS[name]
    card = urgent(*resources)
    assert card is not None, f"missed lead: {name}"
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Lead with leg cramps, same-day evaluation")
    assert "not necessarily the emergency department" in card["detail"]
    assert code in card["detail"]
    [referral] = referral_resources(card)
    assert referral["priority"] == "urgent"


def test_lead_beside_another_red_flag_keeps_the_emergency_wording():
    card = urgent(observation("5671-3", 60, "ug/dL", 3), condition("I82.401", onset=2))
    assert card["summary"].startswith("Same-day assessment")
    assert referral_resources(card)[0]["priority"] == "stat"


@pytest.mark.parametrize(
    "birth, level, urgent_card",
    [
        ("2016-01-01", 44, False),  # a child: the CDC chelation range starts at 45
        ("2016-01-01", 45, True),
        ("1970-01-01", 40, True),  # an adult: 40 (Kosnett 2007, prompt evaluation)
    ],
)
def test_children_use_the_cdc_childhood_lead_values(birth, level, urgent_card):
    cards = run(
        observation("5671-3", level, "ug/dL", 5), *normal_workup(), who=patient(birth=birth)
    )
    assert ("urgent-care" in cards) is urgent_card
    if not urgent_card:
        assert cards["primary-care-workup"]["indicator"] == "warning"


def test_a_child_at_the_cdc_reference_value_is_seen_in_primary_care():
    child = patient(birth="2018-05-01")
    cards = run(observation("5671-3", 3.5, "ug/dL", 20), *normal_workup(), who=child)
    assert "urgent-care" not in cards and "5671-3" in cards["primary-care-workup"]["detail"]
    adult = run(observation("5671-3", 3.5, "ug/dL", 20), *normal_workup())
    assert "primary-care-workup" not in adult


@pytest.mark.parametrize("name", sorted(URGENT_FLAGS))
def test_each_red_flag_alone_gives_the_critical_card(name):
    resources, code = URGENT_FLAGS[name]
    card = urgent(*resources)
    assert card is not None, f"missed urgent red flag: {name}"
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Same-day assessment")
    assert "**Next step**" in card["detail"]
    assert code in card["detail"]
    [referral] = referral_resources(card)
    assert referral["code"]["coding"][0]["code"] == "306254002"
    assert referral["priority"] == "stat"
    assert referral["status"] == "draft" and referral["intent"] == "proposal"
    assert referral["subject"] == {"reference": "Patient/p-routes"}
    assert referral["reasonReference"], "the referral names the evidence"


URGENT_NEAR_MISSES = {
    "dvt 15 days old": [condition("404223003", onset=15)],
    "chronic dvt": [condition("I82.511", onset=2)],
    "history of dvt": [condition("Z86.718", onset=2)],
    "dvt resolved": [condition("I82.401", onset=5, clinical="resolved")],
    "dvt inactive": [condition("I82.401", onset=5, clinical="inactive")],
    "dvt refuted": [condition("I82.401", onset=5, verification="refuted")],
    "dvt entered in error": [condition("404223003", onset=5, verification="entered-in-error")],
    "dvt abated, no status": [
        dict(condition("I82.401", onset=5, clinical=None), abatementDateTime=day(1))
    ],
    "critical limb ischaemia is chronic": [condition("233962007", onset=1)],
    "arterial occlusion 20 days old": [condition("I74.3", onset=20)],
    "iliac thrombosis 15 days old": [condition("I74.5", onset=15)],
    "superficial thrombophlebitis of the leg": [condition("I80.01", onset=2)],
    "leg thrombophlebitis, deep or superficial not said": [condition("I80.3", onset=2)],
    "superficial thrombophlebitis in pregnancy": [condition("O22.23", onset=2)],
    "superficial thrombophlebitis in the puerperium": [condition("O87.0", onset=2)],
    "femoral thrombophlebitis 15 days old": [condition("I80.12", onset=15)],
    "deep phlebothrombosis in pregnancy 15 days old": [condition("O22.32", onset=15)],
    "temperature 37.9": [observation("8310-5", 37.9, "Cel", 0)],
    "temperature 100.3 degF": [observation("8310-5", 100.3, "[degF]", 0)],
    "fever 4 days ago": [observation("8310-5", 39.0, "Cel", 4)],
    "fever 4 days ago, normal since": [
        observation("8310-5", 39.2, "Cel", 4),
        observation("8310-5", 37.0, "Cel", 1),
    ],
    "temperature 37.9 preliminary": [observation("8310-5", 37.9, "Cel", 0, status="preliminary")],
    "fever entered in error": [observation("8310-5", 39.0, "Cel", 0, status="entered-in-error")],
    "fever without unit": [observation("8310-5", 39.0, None, 0)],
    "fever coded 4 days ago": [condition("R50.9", onset=4)],
    # Expected reactions, not a febrile illness with cramps (issue 12).
    "postvaccination fever": [condition("R50.83", onset=0)],
    "febrile transfusion reaction": [condition("R50.84", onset=0)],
    "postprocedural fever coded 4 days ago": [condition("R50.82", onset=4)],
    "delirium due to known condition 15 days ago": [condition("F05", onset=15)],
    "cauda equina syndrome 15 days ago": [condition("G83.4", onset=15)],
    "potassium 2.5 preliminary": [observation("2823-3", 2.5, "mmol/L", 0, status="preliminary")],
    "potassium 2.1 registered only": [observation("2823-3", 2.1, "mmol/L", 0, status="registered")],
    "ionized calcium 0.80": [observation("1995-0", 0.80, "mmol/L", 1)],
    "ionized calcium 0.70 eight days ago": [observation("1995-0", 0.70, "mmol/L", 8)],
    "corrected calcium 1.75 mmol/L": [observation("29265-6", 1.75, "mmol/L", 1)],
    "general weakness coded": [condition("R53.1", onset=1)],
    "confusion 15 days ago": [condition("R41.0", onset=15)],
    "confusion resolved": [condition("286933003", onset=2, clinical="resolved")],
    "potassium 2.5": [observation("2823-3", 2.5, "mmol/L", 1)],
    "potassium 6.4": [observation("2823-3", 6.4, "mmol/L", 1)],
    "potassium 2.1 eight days ago": [observation("2823-3", 2.1, "mmol/L", 8)],
    "potassium 2.1 then 3.9": [
        observation("2823-3", 2.1, "mmol/L", 3),
        observation("2823-3", 3.9, "mmol/L", 1),
    ],
    "potassium in an unknown unit": [observation("2823-3", 2.0, "mg", 1)],
    "sodium 125": [observation("2951-2", 125, "mmol/L", 1)],
    "magnesium 0.50 mmol/L": [observation("2601-3", 0.50, "mmol/L", 1)],
    "magnesium 1.3 mg/dL": [observation("19123-9", 1.3, "mg/dL", 1)],
    "calcium 7.0 mg/dL": [observation("17861-6", 7.0, "mg/dL", 1)],
    "calcium 1.76 mmol/L": [observation("17861-6", 1.76, "mmol/L", 1)],
    "ck 999": [observation("2157-6", 999, "U/L", 1)],
    "ck 5000 four days ago": [observation("2157-6", 5000, "U/L", 4)],
    "rhabdomyolysis 20 days ago": [condition("240131006", onset=20)],
    "thyroid storm 20 days ago": [condition("E05.91", onset=20)],
    "thyrotoxicosis without storm": [condition("E05.90", onset=2)],
    "lead 39.9": [observation("5671-3", 39.9, "ug/dL", 10)],
    "lead 79, 31 days ago": [observation("5671-3", 79, "ug/dL", 31)],
    "lead 95, 91 days ago": [observation("5671-3", 95, "ug/dL", 91)],
    "lead 60, 100 days ago": [observation("5671-3", 60, "ug/dL", 100)],
    "lead poisoning coded 31 days ago": [condition("1145155005", onset=31)],
    "lead toxic effect coded 200 days ago": [condition("T56.0X1A", onset=200)],
    "raised blood lead coded, no level": [condition("407152001", onset=2)],
    "abnormal lead level coded, measured 12": [
        condition("R78.71", onset=30),
        observation("5671-3", 12, "ug/dL", 30),
    ],
    "lead exposure coded 31 days ago": [condition("Z77.011", onset=31)],
    "leg swelling and calf pain alone": [
        condition("449614009", onset=1),
        condition("300954003", onset=1),
    ],
    "muscle weakness coded": [condition("26544005", onset=1)],
}


@pytest.mark.parametrize("name", sorted(URGENT_NEAR_MISSES))
def test_near_misses_and_old_data_never_invent_an_urgent_card(name):
    assert urgent(*URGENT_NEAR_MISSES[name]) is None, f"invented urgent card: {name}"


def test_urgent_card_lists_every_red_flag():
    card = urgent(
        condition("I82.401", onset=2),
        observation("8310-5", 101.5, "[degF]", 0),
        observation("2823-3", 2.2, "mmol/L", 1),
    )
    assert "ICD-10-CM I82.401" in card["detail"]
    assert "Body temperature 38.6 °C on 2026-11-24 (LOINC 8310-5" in card["detail"]
    assert "Potassium 2.2 mmol/L on 2026-11-23 (LOINC 2823-3)" in card["detail"]
    assert "DVT" in card["detail"] or "thrombosis" in card["detail"]


def test_critical_value_older_than_a_week_goes_to_primary_care_not_lost():
    cards = run(observation("2823-3", 2.1, "mmol/L", 20))
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert "Potassium 2.1 mmol/L on 2026-11-04 (LOINC 2823-3)" in card["detail"]


@pytest.mark.parametrize(
    "critical, label",
    [
        (observation("2823-3", 2.2, "mmol/L", 1, status="preliminary"), "Potassium"),
        (observation("29265-6", 1.62, "mmol/L", 2), "Calcium"),
    ],
)
def test_preliminary_or_corrected_critical_value_is_not_repeated_on_primary_care(critical, label):
    cards = run(critical, *normal_workup())
    assert "urgent-care" in cards
    assert label not in cards.get("primary-care-workup", {}).get("summary", "")


def test_critical_value_this_week_is_not_repeated_on_the_primary_care_card():
    cards = run(observation("2823-3", 2.1, "mmol/L", 2))
    assert "urgent-care" in cards
    assert "Potassium" not in cards.get("primary-care-workup", {}).get("summary", "")


def test_old_acute_occlusion_is_followed_by_vascular_not_urgent():
    cards = run(condition("I74.3", onset=40), *normal_workup())
    assert "urgent-care" not in cards
    assert cards["vascular"]["indicator"] == "warning"


def test_old_thyroid_storm_reaches_endocrinology():
    cards = run(condition("E05.91", onset=40), *normal_workup())
    assert "urgent-care" not in cards
    assert "ICD-10-CM E05.91" in cards["endocrinology"]["detail"]


@pytest.mark.parametrize("code", ["E05.01", "E05.21", "E05.91"])
def test_recent_thyroid_storm_is_urgent_care_only_not_also_endocrinology(code):
    cards = run(condition(code, onset=3), *normal_workup())
    assert "urgent-care" in cards
    assert "endocrinology" not in cards


def test_cauda_equina_is_a_surgical_emergency_on_the_urgent_card():
    card = urgent(condition("G83.4", onset=1))
    assert "Cauda equina syndrome is a surgical emergency" in card["detail"]


def test_urgent_card_says_only_what_concerns_the_rules_that_fired():
    detail = urgent(condition("I82.401", onset=2))["detail"]
    assert "ASH 2020" in detail and "anticoagulation" in detail
    assert "temperature" not in detail and "lead" not in detail.lower()
    fever = urgent(observation("8310-5", 38.6, "Cel", 1))["detail"]
    assert "highest reading of 72 hours" in fever and "DVT" not in fever


def test_highest_temperature_of_72_hours_is_the_evidence():
    card = urgent(observation("8310-5", 38.9, "Cel", 2), observation("8310-5", 37.1, "Cel", 0))
    assert "Body temperature 38.9 °C on 2026-11-22" in card["detail"]


def test_ionized_calcium_in_mg_dl_is_converted():
    # 17864-0 is the mass (ISE) code; 3.0 mg/dL = 0.75 mmol/L
    card = urgent(observation("17864-0", 3.0, "mg/dL", 1))
    assert "Calcium (ionized) 0.75 mmol/L" in card["detail"]


# ----------------------------------------------------------------------------- lead tiers


@pytest.mark.parametrize(
    "resources",
    [
        [observation("5671-3", 40, "ug/dL", 31)],
        [observation("5671-3", 79.9, "ug/dL", 89)],
        [observation("10368-9", 2.5, "umol/L", 60)],  # 51.8 ug/dL
        [observation("5671-3", 79, "ug/dL", 45)],  # older than 30 days (80+ is same-day)
    ],
)
def test_lead_40_plus_one_to_three_months_ago_is_prompt_evaluation_in_primary_care(resources):
    cards = run(*resources, *normal_workup())
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert "prompt evaluation" in card["summary"]
    assert "prompt medical evaluation" in card["detail"] and "Kosnett 2007" in card["detail"]


@pytest.mark.parametrize(
    "resources",
    [
        [observation("5671-3", 39.9, "ug/dL", 30)],  # elevated, not the prompt tier
        [observation("5671-3", 60, "ug/dL", 91)],  # 40-79 but older than 90 days
        [observation("5671-3", 45, "ug/dL", 10)],  # urgent-care's
    ],
)
def test_lead_prompt_evaluation_near_misses(resources):
    cards = run(*resources, *normal_workup())
    assert "remove from exposure" not in cards.get("primary-care-workup", {}).get("summary", "")


def test_urgent_lead_level_is_not_repeated_in_primary_care():
    cards = run(observation("5671-3", 85, "ug/dL", 10), *normal_workup())
    assert "urgent-care" in cards
    assert "primary-care-workup" not in cards


@pytest.mark.parametrize("code", ["407152001", "R78.71", "1145155005", "T56.0X4A"])
def test_coded_raised_lead_or_older_poisoning_suggests_a_blood_lead_test(code):
    cards = run(condition(code, onset=60), *normal_workup())
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert code in card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    assert "5671-3" in {r["code"]["coding"][0]["code"] for r in referral_resources(card)}


def test_coded_raised_lead_with_a_recent_level_orders_nothing_more():
    cards = run(
        condition("R78.71", onset=60), observation("5671-3", 12, "ug/dL", 20), *normal_workup()
    )
    card = cards["primary-care-workup"]
    assert "Blood lead 12 µg/dL" in card["detail"]
    assert "ICD-10-CM R78.71" in card["detail"].split("**Also on record**")[1]
    assert "5671-3" not in {r["code"]["coding"][0]["code"] for r in referral_resources(card)}


def test_raised_lead_with_normal_recent_level_gives_no_card():
    assert "primary-care-workup" not in run(
        condition("407152001", onset=200), observation("5671-3", 3, "ug/dL", 20), *normal_workup()
    )


# ----------------------------------------------------------------------------- endocrinology


@pytest.mark.parametrize(
    "resources, expected",
    [
        (
            [condition("E11.9"), observation("4548-4", 9.1, "%", 30)],
            "HbA1c 9.1 % on 2026-10-25 (LOINC 4548-4)",
        ),
        ([condition("44054006"), observation("59261-8", 75, "mmol/mol", 30)], "LOINC 59261-8"),
        ([condition("46635009"), observation("17856-6", 11.2, "%", 300)], "LOINC 17856-6"),
        ([condition("E11.65")], "ICD-10-CM E11.65"),
        ([condition("E10.65")], "ICD-10-CM E10.65"),
        ([condition("443694000")], "SNOMED CT 443694000"),
        ([condition("444073006")], "SNOMED CT 444073006"),
        ([condition("34486009")], "SNOMED CT 34486009"),
        ([condition("90739004")], "SNOMED CT 90739004"),
        ([condition("353295004")], "SNOMED CT 353295004"),
        ([condition("E05.00")], "ICD-10-CM E05.00"),
        ([condition("E05.90")], "ICD-10-CM E05.90"),
        ([condition("E05.10")], "ICD-10-CM E05.10"),  # E05 prefix
        ([condition("E05.20")], "ICD-10-CM E05.20"),
        ([condition("E05.80")], "ICD-10-CM E05.80"),
        ([condition("E13.65")], "ICD-10-CM E13.65"),
        ([condition("E11.65"), observation("4548-4", 9.4, "%", 30)], "ICD-10-CM E11.65"),
        (
            [condition("E11.65"), observation("4548-4", 7.5, "%", 400)],
            "ICD-10-CM E11.65",
        ),  # HbA1c too old
        (
            [observation("3016-3", 0.05, "m[IU]/L", 60)],
            "TSH 0.05 mIU/L on 2026-09-25 (LOINC 3016-3)",
        ),
        # Coded hyperthyroidism with a TSH above 10 (likely hypothyroid after its treatment)
        ([condition("E05.00"), observation("3016-3", 12, "u[IU]/mL", 60)], "TSH 12 mIU/L"),
    ],
)
def test_endocrinology_fires(resources, expected):
    card = run(*resources, *normal_workup())["endocrinology"]
    assert card["indicator"] == "warning"
    assert expected in card["detail"]
    assert referral_resources(card)[0]["code"]["coding"][0]["code"] == "306278007"


@pytest.mark.parametrize(
    "resources",
    [
        [condition("E11.9"), observation("4548-4", 9.0, "%", 30)],
        [condition("E11.9"), observation("59261-8", 74, "mmol/mol", 30)],
        [condition("E11.9"), observation("4548-4", 10.4, "%", 400)],
        [
            condition("E11.9"),
            observation("4548-4", 10.4, "%", 100),
            observation("4548-4", 7.9, "%", 10),
        ],
        [condition("E11.9", clinical="resolved"), observation("4548-4", 10.4, "%", 30)],
        [condition("E11.9", verification="entered-in-error"), observation("4548-4", 10.4, "%", 30)],
        [condition("E11.649")],
        [condition("E10.649")],
        [condition("80394007")],
        [condition("34486009", clinical="resolved")],
        [condition("90739004", verification="refuted")],
        [observation("3016-3", 0.1, "m[IU]/L", 60)],
        [observation("3016-3", 10, "m[IU]/L", 60)],
        [observation("3016-3", 0.02, "m[IU]/L", 400)],
        # --- clinical review
        [condition("E11.65"), observation("4548-4", 8.2, "%", 30)],  # coded, but HbA1c <= 9.0
        [condition("E13.65"), observation("4548-4", 9.0, "%", 200)],
        [condition("E10.65"), observation("59261-8", 64, "mmol/mol", 30)],
        [observation("3016-3", 10.5, "m[IU]/L", 60)],  # TSH > 10 alone: primary care
        [condition("E03.9")],  # hypothyroidism alone: primary care
        [condition("E03.9"), observation("3016-3", 10, "m[IU]/L", 60)],
        [condition("E03.9", clinical="resolved"), observation("3016-3", 14, "m[IU]/L", 60)],
        # A TSH above 10 with coded hypothyroidism is primary care's (ATA 2014; review 10)
        [condition("E03.9"), observation("3016-3", 10.5, "m[IU]/L", 60)],
        [condition("40930008"), observation("3016-3", 12, "u[IU]/mL", 60)],
        [condition("E05.91", onset=3)],  # storm: urgent care only
    ],
)
def test_endocrinology_near_misses(resources):
    assert "endocrinology" not in run(*resources, *normal_workup())


def test_high_hba1c_without_a_diabetes_code_goes_to_primary_care():
    cards = run(observation("4548-4", 9.6, "%", 30), *normal_workup())
    assert "endocrinology" not in cards
    assert cards["primary-care-workup"]["indicator"] == "warning"
    assert "HbA1c 9.6 %" in cards["primary-care-workup"]["detail"]


@pytest.mark.parametrize(
    "code", ["40930008", "111566002", "54823002", "E03.9", "E03.8", "E03.2", "E89.0", "E06.3"]
)
def test_hypothyroidism_alone_goes_to_primary_care_with_tsh_and_ck(code):
    # Clinical review (route-guide §2.6/§8.3): no longer an info endocrinology card.
    cards = run(condition(code), *normal_workup())
    assert "endocrinology" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "info"
    assert "hypothyroid myopathy can cause cramps" in card["detail"]
    assert {"3016-3", "2157-6"} <= {
        r["code"]["coding"][0]["code"] for r in referral_resources(card)
    }


def test_hypothyroidism_with_recent_normal_tsh_and_ck_needs_no_card():
    # Nothing to add (issue 13: the workup card only when it adds something).
    assert "primary-care-workup" not in run(
        condition("E03.9"),
        observation("3016-3", 2.1, "m[IU]/L", 30),
        observation("2157-6", 120, "U/L", 30),
        *normal_workup(),
    )


def test_new_tsh_above_10_without_hypothyroidism_is_primary_care_info():
    cards = run(observation("3016-3", 11.5, "m[IU]/L", 30), *normal_workup())
    assert "endocrinology" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "info"
    assert "start levothyroxine in primary care" in card["detail"]
    assert "TSH 11.5 mIU/L" in card["detail"]


def test_hypothyroidism_with_high_tsh_is_a_primary_care_warning_not_endocrinology():
    # ATA 2014 (clinical review, session 10): confirm treatment, adjust, recheck in primary
    # care; endocrinology only when it stays hard to control.
    cards = run(condition("E03.9"), observation("3016-3", 14, "m[IU]/L", 30), *normal_workup())
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    evidence = card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    assert "ICD-10-CM E03.9" in evidence and "TSH 14 mIU/L" in evidence
    assert "endocrinology" not in cards


@pytest.mark.parametrize(
    "resources",
    [
        [condition("E03.9"), condition("E11.65")],
        [condition("E03.9"), condition("E05.00")],
        [condition("E03.9"), observation("3016-3", 0.05, "m[IU]/L", 30)],
        [condition("E05.90"), observation("3016-3", 10.1, "m[IU]/L", 30)],
    ],
)
def test_endocrinology_is_never_info(resources):
    card = run(*resources, *normal_workup())["endocrinology"]
    assert card["indicator"] == "warning"


def test_hypothyroidism_is_context_on_another_endocrinology_card():
    card = run(condition("E03.9"), condition("E05.90"), *normal_workup())["endocrinology"]
    assert "ICD-10-CM E03.9" in card["detail"].split("**Also on record**")[1]


# ----------------------------------------------------------------------------- vascular


@pytest.mark.parametrize(
    "resources, expected",
    [
        ([condition("399957001")], "SNOMED CT 399957001"),
        ([condition("400047006")], "SNOMED CT 400047006"),
        ([condition("51274000")], "SNOMED CT 51274000"),
        ([condition("63491006")], "SNOMED CT 63491006"),
        ([condition("I73.9")], "ICD-10-CM I73.9"),
        ([condition("I70.213")], "ICD-10-CM I70.213"),
        ([condition("I70.219")], "ICD-10-CM I70.219"),
        (
            [observation("446841001", 0.90, "1", 100, system="snomed")],
            "Ankle-brachial index 0.9 on 2026-08-16 (SNOMED CT 446841001)",
        ),
        ([observation("446841001", 0.72, "{ratio}", 100, system="snomed")], "0.72"),
        (
            [observation("446841001", 0.66, None, 100, system="snomed")],
            "Ankle-brachial index 0.66",
        ),  # no unit
        ([condition("E11.51")], "ICD-10-CM E11.51"),
        ([condition("E10.51")], "ICD-10-CM E10.51"),
        ([condition("E13.51")], "ICD-10-CM E13.51"),
        ([condition("I74.5", onset=40)], "ICD-10-CM I74.5"),  # older occlusion, no longer urgent
        ([condition("I74.09", onset=40)], "ICD-10-CM I74.09"),
    ],
)
def test_vascular_fires_for_pad(resources, expected):
    card = run(*resources, *normal_workup())["vascular"]
    assert card["indicator"] == "warning"
    assert expected in card["detail"]
    # An ABI of the last year on the card: not asked for again (issue 22); otherwise asked.
    abi_on_card = "Ankle-brachial index" in card["detail"]
    assert ("ABI" in card["detail"].split("**Next step**")[1]) is not abi_on_card
    [referral] = referral_resources(card)
    assert referral["code"]["coding"][0]["code"] == "307777008"
    assert referral["priority"] == "routine"


@pytest.mark.parametrize(
    "resources",
    [
        [condition("233962007")],
        [condition("428171009")],
        [condition("I70.221")],
        [condition("I70.234")],
        # Gangrene (I70.26*, E1x.52) is a same-day card: tests/test_review10_vascular.py.
        [observation("446841001", 0.38, "1", 30, system="snomed")],
        [observation("446841001", 0.35, None, 30, system="snomed")],
    ],
)
def test_limb_threatening_ischaemia_is_an_urgent_vascular_referral(resources):
    # design.md: the vascular card is `warning` only; urgency is the ServiceRequest priority
    # (clinical review: it used to be `critical`).
    cards = run(*resources, *normal_workup())
    assert "urgent-care" not in cards
    card = cards["vascular"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Urgent vascular referral")
    assert referral_resources(card)[0]["priority"] == "urgent"


def test_lowest_abi_of_the_two_legs_decides():
    right = observation("446841001", 1.05, "1", 20, system="snomed", time="10:00:00")
    left = observation("446841001", 0.78, "1", 20, system="snomed", time="10:00:00")
    card = run(right, left, *normal_workup())["vascular"]
    assert "Ankle-brachial index 0.78" in card["detail"]


@pytest.mark.parametrize("first, second", [("09:05:00", "09:20:00"), ("08:00:00", "16:30:00")])
def test_abi_legs_measured_at_different_times_of_one_day_are_read_together(first, second):
    left = observation("446841001", 0.62, "1", 20, system="snomed", time=first)
    right = observation("446841001", 1.02, "1", 20, system="snomed", time=second)
    card = run(left, right, *normal_workup())["vascular"]
    assert "Ankle-brachial index 0.62" in card["detail"]


def test_abi_of_an_earlier_day_does_not_pair_with_the_newest():
    old_left = observation("446841001", 0.62, "1", 21, system="snomed", time="09:00:00")
    new_both = [
        observation("446841001", 1.02, "1", 20, system="snomed", time="09:00:00"),
        observation("446841001", 0.98, "1", 20, system="snomed", time="09:10:00"),
    ]
    assert "vascular" not in run(old_left, *new_both, *normal_workup())


@pytest.mark.parametrize(
    "resources",
    [
        [condition("I70.229")],
        [condition("I70.244")],
        [observation("446841001", 0.30, "1", 30, system="snomed")],
        [
            condition("I73.9"),
            condition("233962007"),
            observation("446841001", 0.35, "1", 30, system="snomed"),
        ],
    ],
)
def test_vascular_card_is_never_critical(resources):
    response = evaluate(hook_request(*resources, *normal_workup()))
    check_response(response)
    card = next(c for c in response["cards"] if route_of(c) == "vascular")
    assert card["indicator"] == "warning"


@pytest.mark.parametrize(
    "resources",
    [
        [observation("446841001", 0.91, "1", 30, system="snomed")],
        [observation("446841001", 0.7, "1", 400, system="snomed")],
        [condition("303081002")],  # neurogenic claudication is spinal
        [condition("M48.062")],
        [condition("I73.9", clinical="resolved")],
        [condition("63491006", verification="entered-in-error")],
        [condition("I70.25")],  # other extremities (not the leg): removed by review
        [observation("446841001", 0.95, None, 30, system="snomed")],
        [condition("E11.59")],  # other circulatory complication, not angiopathy
    ],
)
def test_vascular_near_misses(resources):
    assert "vascular" not in run(*resources, *normal_workup())


def test_neurogenic_claudication_goes_to_spine_routes_not_vascular():
    assert set(run(condition("M48.062", onset=30), *normal_workup())) == {"physiatry"}
    assert set(run(condition("M48.062", onset=400), *normal_workup())) == {"orthopedics"}


# ----------------------------------------------------------------------------- neurology


@pytest.mark.parametrize(
    "code",
    ["302226006", "386033004", "42345000", "G62.9", "G60.9", "G63", "G57.30", "26544005", "M62.81"],
)
def test_neurology_fires_for_new_neuropathy_and_weakness(code):
    card = run(condition(code, onset=60), *normal_workup())["neurology"]
    assert card["indicator"] == "warning"
    assert "EMG" in card["detail"] and "nerve conduction" in card["detail"]
    assert referral_resources(card)[0]["code"]["coding"][0]["code"] == "308474002"


@pytest.mark.parametrize("code", ["424736006", "713706002", "E11.42", "E10.40", "E13.42"])
def test_an_old_diabetic_neuropathy_alone_is_no_neurology_referral(code):
    # Coded more than a year ago (issue 13); a recent one is a neurology card since issue 22
    # (tests/test_card_text.py).
    assert "neurology" not in run(condition(code, onset=400), *normal_workup())


def test_diabetic_neuropathy_with_weakness_is_atypical_and_shown_as_context():
    card = run(condition("E11.42", onset=3000), condition("26544005", onset=20), *normal_workup())[
        "neurology"
    ]
    assert "E11.42" in card["detail"].split("**Also on record**")[1]


def test_an_old_neuropathy_is_not_new():
    assert "neurology" not in run(condition("G62.9", onset=800), *normal_workup())


@pytest.mark.parametrize("code", ["82470000", "R25.3", "37340000", "86044005", "G12.21", "G12.20"])
def test_fasciculation_or_motor_neuron_disease(code):
    card = run(condition(code), *normal_workup())["neurology"]
    assert "motor neuron disease" in card["summary"]


def test_numbness_alone_is_not_a_neurology_referral_but_is_context():
    assert "neurology" not in run(condition("309537005"), condition("R20.2"), *normal_workup())
    card = run(condition("G62.9"), condition("429783005"), *normal_workup())["neurology"]
    assert "**Also on record**" in card["detail"] and "SNOMED CT 429783005" in card["detail"]


def test_general_weakness_r53_1_is_context_not_a_neurology_trigger():
    # R53.1 "Weakness" is general asthenia, not muscle weakness (clinical review).
    assert "neurology" not in run(condition("R53.1"), *normal_workup())
    card = run(condition("G62.9"), condition("R53.1"), *normal_workup())["neurology"]
    assert "ICD-10-CM R53.1" in card["detail"].split("**Also on record**")[1]
    assert "R53.1" not in card["summary"]


# ----------------------------------------------------------------------------- orthopedics / physiatry


@pytest.mark.parametrize(
    "code",
    [
        "76107001",
        "18347007",
        "370471003",
        "303081002",
        "202708005",
        "202735001",
        "84857004",
        "72274001",
        "128196005",
        "2415007",
        "23056005",
        "M48.061",
        "M48.07",
        "M51.16",
        "M51.27",
        "M54.16",
        "M54.10",
        "M54.31",
        "M47.26",
    ],
)
def test_spinal_causes_go_to_physiatry_first_and_to_orthopedics_when_persisting(code):
    # One card per clinical question (issue 13; route-guide §8.9): conservative care first,
    # a surgical opinion when the problem began 6 months ago or more.
    new = run(condition(code, onset=30), *normal_workup())
    assert "orthopedics" not in new
    assert new["physiatry"]["indicator"] == "info"
    assert referral_resources(new["physiatry"])[0]["code"]["coding"][0]["code"] == "306289000"
    assert "conservative care" in new["physiatry"]["detail"]
    old = run(condition(code, onset=200), *normal_workup())
    assert "physiatry" not in old
    assert old["orthopedics"]["indicator"] == "warning"
    assert referral_resources(old["orthopedics"])[0]["code"]["coding"][0]["code"] == "308481009"
    assert "continue physiotherapy" in old["orthopedics"]["detail"]


def test_orthopedics_source_is_a_cramp_differential_reference_not_neurology():
    card = run(condition("M51.16", onset=200), *normal_workup())["orthopedics"]
    assert card["source"]["url"] == "https://pubmed.ncbi.nlm.nih.gov/22963024/"
    assert card["links"][0]["url"] == card["source"]["url"]
    assert "aan.com" not in card["source"]["url"]


def test_weakness_goes_to_neurology_only():
    # The same evidence on a physiatry card was a duplicate (issue 13).
    cards = run(condition("M62.81"), *normal_workup())
    assert "neurology" in cards and "physiatry" not in cards and "orthopedics" not in cards


@pytest.mark.parametrize(
    "status",
    [{"clinical": "resolved"}, {"verification": "refuted"}, {"verification": "entered-in-error"}],
)
def test_spine_near_misses(status):
    cards = run(condition("M51.16", **status), *normal_workup())
    assert "orthopedics" not in cards and "physiatry" not in cards


# ----------------------------------------------------------------------------- primary care


def test_missing_workup_lists_what_is_missing_and_orders_it():
    card = run()["primary-care-workup"]
    assert card["indicator"] == "info"
    assert "No recent result: " in card["detail"]
    for label in ("potassium", "kidney function", "glucose"):
        assert f"{label} (" in card["detail"]
    assert "magnesium" not in card["detail"]  # only with a risk factor (issue 13)
    assert "liver" not in card["detail"]  # only with cirrhosis or alcohol on record
    assert "none on record" in card["detail"]
    orders = {r["code"]["coding"][0]["code"] for r in referral_resources(card)}
    assert orders == {"24323-8"}


def test_magnesium_is_asked_for_only_with_a_risk_factor():
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2601-3"]
    assert "primary-care-workup" not in run(*workup)
    card = run(condition("E11.9"), *workup)["primary-care-workup"]
    assert "magnesium (3 months; none on record" in card["detail"]


def test_a_typical_chart_with_old_cramps_and_old_labs_gets_a_workup_only_after_a_year():
    old_labs = normal_workup(days_ago=200)  # potassium older than 3 months, the rest recent
    assert "primary-care-workup" not in run(*old_labs, cramp_onset=400)
    assert "primary-care-workup" in run(*old_labs, cramp_onset=30)  # new cramps


def test_complete_normal_workup_gives_no_primary_care_card():
    assert "primary-care-workup" not in run(*normal_workup())


def test_stale_results_are_named_with_value_date_and_code():
    stale = [observation("2823-3", 4.1, "mmol/L", 120)] + normal_workup()[1:]
    card = run(*stale)["primary-care-workup"]
    assert "potassium (3 months; last 4.1 mmol/L on 2026-07-27, LOINC 2823-3)" in card["detail"]
    assert {r["code"]["coding"][0]["code"] for r in referral_resources(card)} == {"24323-8"}


def test_creatinine_in_umol_and_egfr_count_as_kidney_function():
    base = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2160-0"]
    assert "primary-care-workup" not in run(*base, observation("14682-9", 80, "umol/L", 30))
    assert "primary-care-workup" not in run(
        *base, observation("98979-8", 85, "mL/min/{1.73_m2}", 30)
    )


@pytest.mark.parametrize(
    "resource, text",
    [
        (
            observation("2823-3", 3.2, "mmol/L", 10),
            "Potassium 3.2 mmol/L on 2026-11-14 (LOINC 2823-3)",
        ),
        (observation("2823-3", 2.5, "mmol/L", 10), "Potassium 2.5 mmol/L"),
        (observation("2823-3", 5.8, "mmol/L", 10), "Potassium 5.8 mmol/L"),
        (observation("2601-3", 0.65, "mmol/L", 10), "Magnesium 1.58 mg/dL"),
        (
            observation("19123-9", 1.6, "mg/dL", 10),
            "Magnesium 1.6 mg/dL (0.66 mmol/L) on 2026-11-14 (LOINC 19123-9)",
        ),
        (observation("2951-2", 130, "mmol/L", 10), "Sodium 130 mmol/L"),
        (observation("17861-6", 8.0, "mg/dL", 10), "Calcium (total) 8 mg/dL"),
        (observation("29265-6", 2.05, "mmol/L", 10), "Calcium (corrected for albumin) 2.05 mmol/L"),
        (
            observation("29265-6", 1.60, "mmol/L", 20),
            "Calcium (corrected for albumin) 1.6 mmol/L on 2026-11-04",
        ),  # critical, > 7 days
        (
            observation("5671-3", 12, "ug/dL", 60),
            "Blood lead 12 µg/dL on 2026-09-25 (LOINC 5671-3)",
        ),
        (condition("E86.0"), "ICD-10-CM E86.0"),
        (condition("34095006"), "SNOMED CT 34095006"),
        (condition("E86.9"), "ICD-10-CM E86.9"),
        (condition("E87.6"), "ICD-10-CM E87.6"),
    ],
)
def test_primary_care_corrects_mild_abnormalities(resource, text):
    cards = run(resource, *normal_workup(30))
    card = cards["primary-care-workup"]
    assert text in card["detail"]
    assert "urgent-care" not in cards


@pytest.mark.parametrize(
    "resource",
    [
        observation("2823-3", 3.5, "mmol/L", 10),
        observation("2823-3", 5.4, "mmol/L", 10),
        observation("2601-3", 0.70, "mmol/L", 10),
        observation("19123-9", 1.8, "mg/dL", 10),
        observation("2951-2", 135, "mmol/L", 10),
        observation("17861-6", 8.5, "mg/dL", 10),
        observation("29265-6", 2.12, "mmol/L", 10),
        observation("5671-3", 4.9, "ug/dL", 60),
        observation("2823-3", 3.0, "mmol/L", 100),
        condition("E86.0", clinical="resolved"),
        condition("34095006", verification="entered-in-error"),
    ],
)
def test_primary_care_near_misses(resource):
    assert "primary-care-workup" not in run(resource, *normal_workup(30))


def test_low_potassium_with_ckd_goes_to_nephrology_not_primary_care():
    cards = run(condition("N18.4"), observation("2823-3", 3.1, "mmol/L", 5), *normal_workup(30))
    assert "primary-care-workup" not in cards
    assert "nephrology" in cards


@pytest.mark.parametrize(
    "egfr",
    [
        observation("98979-8", 22, "mL/min/{1.73_m2}", 20),
        observation("33914-3", 28, "mL/min", 100),
    ],
)
def test_low_egfr_without_coded_ckd_still_refers_but_says_it_may_be_aki(egfr):
    # The workup's creatinine is taken the same day as the eGFR, so it is compared with it
    # rather than replacing it (a newer creatinine would decide: see test_messy_data.py).
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2160-0"]
    card = run(egfr, *workup)["nephrology"]
    assert card["indicator"] == "warning"
    assert (
        "A single low eGFR may be acute kidney injury: repeat creatinine within days and "
        "refer if it persists" in card["detail"]
    )
    assert referral_resources(card)[0]["code"]["coding"][0]["code"] == "306286007"


@pytest.mark.parametrize(
    "ckd", [condition("N18.4"), condition("N18.32"), condition("433144002"), condition("I12.0")]
)
def test_low_egfr_with_coded_ckd_is_the_usual_referral(ckd):
    card = run(ckd, observation("98979-8", 22, "mL/min/{1.73_m2}", 20), *normal_workup())[
        "nephrology"
    ]
    assert "acute kidney injury" not in card["detail"]
    assert "eGFR 22" in card["detail"]


def test_dialysis_wording_wins_over_the_low_egfr_wording():
    card = run(
        condition("Z99.2"), observation("98979-8", 9, "mL/min/{1.73_m2}", 20), *normal_workup()
    )["nephrology"]
    assert "dialysis prescription" in card["summary"]
    assert "acute kidney injury" not in card["detail"]


@pytest.mark.parametrize(
    "resources",
    [
        [observation("98979-8", 30, "mL/min/{1.73_m2}", 20)],
        [observation("98979-8", 22, "mL/min/{1.73_m2}", 400)],
        [
            observation("98979-8", 22, "mL/min/{1.73_m2}", 100),
            observation("98979-8", 41, "mL/min/{1.73_m2}", 10),
        ],
    ],
)
def test_low_egfr_near_misses(resources):
    assert "nephrology" not in run(*resources, *normal_workup())


def test_egfr_estimated_from_creatinine_says_estimated():
    base = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2160-0"]
    cards = run(*base, observation("14682-9", 265, "umol/L", 20))
    detail = cards["nephrology"]["detail"]
    assert "**estimated** with CKD-EPI 2021" in detail and "LOINC 14682-9" in detail


@pytest.mark.parametrize(
    "trigger, order",
    [
        (condition("E11.9"), "4548-4"),
        (condition("E03.9"), "3016-3"),
        (condition("M62.81"), "2157-6"),
        (condition("Z77.011", onset=60), "5671-3"),
    ],
)
def test_targeted_tests_are_ordered_when_a_condition_makes_them_relevant(trigger, order):
    card = run(trigger, *normal_workup())["primary-care-workup"]
    assert order in {r["code"]["coding"][0]["code"] for r in referral_resources(card)}


def test_context_cirrhosis_pregnancy_hypoglycemia():
    card = run(condition("K74.60"), condition("Z3A.24"), condition("302866003"))[
        "primary-care-workup"
    ]
    detail = card["detail"].split("**Also on record**")[1]
    for code in ("ICD-10-CM Z3A.24", "SNOMED CT 302866003"):
        assert code in detail
    # The cirrhosis is evidence here (a magnesium risk): listed once, not again as context.
    assert card["detail"].count("ICD-10-CM K74.60") == 1
    assert "primary-care-workup" not in run(
        condition("K74.60"), condition("77386006"), *normal_workup()
    )


# ----------------------------------------------------------------------------- medication review


@pytest.mark.parametrize(
    "med, text",
    [
        (medication("617312", "atorvastatin 10 MG Oral Tablet"), "Statin, active"),
        (medication("83367", "atorvastatin"), "RxNorm 83367"),
        (medication("310798", "hydrochlorothiazide 25 MG Oral Tablet"), "hydrochlorothiazide"),
        (medication("198223", "spironolactone 50 MG Oral Tablet"), "spironolactone"),
        (medication("313988", "furosemide 40 MG Oral Tablet"), "Loop diuretic"),
        (medication("849574", "Naproxen sodium 220 MG Oral Tablet"), "link with cramps: strong"),
        (
            medication("310197", "estrogens, conjugated (USP) 0.625 MG Oral Tablet"),
            "Conjugated estrogens",
        ),
        (medication("854873", "zolpidem tartrate 10 MG Oral Tablet"), "weak"),
        (medication(None, "Evista 60 mg tablet"), "matched by name"),
        (medication(None, "Estrogens, Conjugated (USP) 0.3 MG tablet"), "Conjugated estrogens"),
        (medication(None, "salmeterol 50 mcg inhaler"), "Beta-2 agonist"),
    ],
)
def test_medication_review_lists_cramp_associated_drugs(med, text):
    card = run(med, *normal_workup())["medication-review"]
    assert card["indicator"] == "info"
    assert text in card["detail"]
    assert "suggestions" not in card, "no verified code for a medication-review order"


def test_combination_product_counts_for_both_classes():
    from cds_service.engine import RuleSet

    ruleset = service().ruleset
    assert isinstance(ruleset, RuleSet)
    route = next(r for r in ruleset.routes if r.code == "medication-review")
    shared = [
        code
        for code, infos in route.medications.codes.items()
        if len({i.drug_class for i in infos}) > 1
    ]
    assert shared, "the research lists combination products under two ingredients"
    code = shared[0][1]
    classes = {i.drug_class for i in route.medications.codes[shared[0]]}
    assert len(classes) == 2, "the shared code belongs to two classes"
    card = run(medication(code, "combination product"), *normal_workup())["medication-review"]
    evidence = card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    assert f"RxNorm {code}" in evidence and "name only" not in evidence


@pytest.mark.parametrize(
    "code, name",
    [
        ("72143", "raloxifene"),
        ("110634", "teriparatide"),
        ("4099", "estrogens, conjugated (USP)"),
        ("10763", "triamterene"),
        ("644", "amiloride"),
        ("5764", "indapamide"),
        ("6916", "metolazone"),
        ("25255", "formoterol"),
        ("39993", "zolpidem"),
    ],
)
def test_unverified_ingredient_code_is_flagged_on_the_card(code, name):
    card = run(medication(code, name), *normal_workup())["medication-review"]
    assert f"RxNorm {code}, code not verified" in card["detail"]


@pytest.mark.parametrize(
    "med",
    [
        medication("83367", "atorvastatin"),
        medication("198312", "triamterene 100 MG Oral Capsule"),
        medication("7258", "naproxen"),
    ],
)
def test_verified_or_sourced_codes_are_not_flagged(med):
    card = run(med, *normal_workup())["medication-review"]
    assert "not verified" not in card["detail"]


def test_quinine_gets_the_safety_wording():
    card = run(medication("9071", "quinine"), *normal_workup())["medication-review"]
    assert card["summary"].startswith("Stop quinine for cramps (FDA warning)")
    assert "FDA" in card["detail"]


@pytest.mark.parametrize(
    "med",
    [
        medication("617312", "atorvastatin 10 MG Oral Tablet", status="stopped"),
        medication("617312", "atorvastatin 10 MG Oral Tablet", status="entered-in-error"),
        medication("617312", "atorvastatin 10 MG Oral Tablet", status="completed"),
        medication("29046", "lisinopril"),
        medication(None, "levalbuterol inhaler"),
        medication("745752", "albuterol inhaler"),  # a reliever alone: potassium normal
    ],
)
def test_medication_near_misses(med):
    assert "medication-review" not in run(med, *normal_workup())


# ----------------------------------------------------------------------------- cross-cutting


@pytest.mark.parametrize(
    "resources, route, code",
    [
        ([condition("I82.401", onset=2)], "urgent-care", "306254002"),
        ([condition("G62.9")], "neurology", "308474002"),
        ([condition("I73.9")], "vascular", "307777008"),
        ([condition("E05.90")], "endocrinology", "306278007"),
        ([condition("M51.16", onset=300)], "orthopedics", "308481009"),
    ],
)
def test_open_referral_shows_the_card_without_a_second_referral(resources, route, code):
    card = run(*resources, service_request(code), *normal_workup())[route]
    assert not referral_resources(card)
    assert "already exists" in card["detail"]


def test_completed_referral_does_not_suppress_a_new_one():
    card = run(
        condition("G62.9"), service_request("308474002", status="completed"), *normal_workup()
    )["neurology"]
    assert referral_resources(card)


def test_cards_are_ordered_critical_warning_info():
    response = evaluate(
        hook_request(
            condition("I82.401", onset=2),
            condition("I73.9"),
            medication("617312", "atorvastatin 10 MG Oral Tablet"),
        )
    )
    check_response(response)
    indicators = [c["indicator"] for c in response["cards"]]
    assert indicators[0] == "critical" and indicators[-1] == "info" and "warning" in indicators


def test_every_route_fires_in_one_busy_record_and_the_response_is_valid():
    response = evaluate(
        hook_request(
            condition("I82.401", onset=2),
            condition("N18.4"),
            condition("E11.65"),
            condition("I73.9"),
            condition("G62.9"),
            condition("M51.16", onset=300),
            medication("617312", "atorvastatin 10 MG Oral Tablet"),
        )
    )
    check_response(response)
    # physiatry is first-line care for a NEW spinal problem; this one persists: orthopedics.
    assert {route_of(c) for c in response["cards"]} == set(ROUTES) - {"physiatry"}
    for card in response["cards"]:
        assert card["source"]["topic"]["system"] == "urn:leg-cramp-cds:referral-route"


def test_flask_endpoint_gives_the_same_cards(tmp_path):
    settings = Settings.from_env({}, today=TODAY.isoformat(), data_dir=tmp_path, auth_mode="off")
    client = create_app(settings).test_client()
    answer = client.post(
        "/cds-services/leg-cramp-referral",
        json=hook_request(condition("I82.401", onset=2), *normal_workup()),
    )
    assert answer.status_code == 200
    check_response(answer.get_json())
    assert route_of(answer.get_json()["cards"][0]) == "urgent-care"


# ----------------------------------------------------------------------------- fhir_examples/

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
# Card topics of the order services that are no route (design.md: `duplicate-referral`).
TOPICS = (*ROUTES, "duplicate-referral")


def test_one_example_per_route():
    routes = {
        next(r for r in sorted(TOPICS, key=len, reverse=True) if p.name.startswith(r))
        for p in EXAMPLE_FILES
    }
    assert routes == set(TOPICS)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_request_fires_its_route(path):
    request = json.loads(path.read_text())
    assert set(request["prefetch"]) - {"medicationstatements"} == {  # optional, newer key
        "patient",
        "conditions",
        "observations",
        "procedures",
        "medications",
        "servicerequests",
    }
    response = evaluate(request)
    check_response(response)
    route = next(r for r in sorted(TOPICS, key=len, reverse=True) if path.name.startswith(r))
    assert route in {route_of(c) for c in response["cards"]}, path.name
