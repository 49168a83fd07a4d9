"""Review 10, M8: albuterol and the other beta-2 agonists.

- An inhaled short-acting reliever alone makes no card: the cramp association (Garrison
  2012) is for long-acting agonists. Beside a low potassium, which beta-2 agonists lower, it
  does, saying not to stop the reliever and that use more than twice a week means poorly
  controlled asthma (GINA 2024). Otherwise it is context on another medicine's card.
- The low-potassium step names beta-2 agonists among the causes only when one is on record.
- Albuterol tablets (including the 12-hour extended-release ones) are not "the reliever".
- The long-acting agonists of current inhalers (vilanterol, olodaterol, indacaterol,
  arformoterol) are recognised by name.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import vignettes as v
from routes_helpers import cards_for as cards
from routes_helpers import hook_request, medication, normal_workup
from routes_helpers import next_steps as steps
from synthea import SYNTHEA_DIR, synthea_files
from synthea import hook_request as chart_request

from cds_service.config import Settings
from cds_service.service import CdsService


def test_a_reliever_alone_makes_no_card():
    assert "medication-review" not in cards(v.albuterol_alone())


def test_a_reliever_with_a_low_potassium_makes_the_card():
    card = cards(v.albuterol_with_potassium_32())["medication-review"]
    evidence = card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    assert "albuterol inhaler" in evidence and "Potassium 3.2 mmol/L" in evidence
    advice = steps(card)
    assert advice.strip().startswith("Do not stop the reliever.")
    assert "more than twice a week" in advice and "GINA 2024" in advice
    assert "lowers potassium" in advice
    assert "https://ginasthma.org/reports/" in [link["url"] for link in card["links"]]
    assert "long-acting" not in advice and "inhaler regimen" not in advice


def test_a_reliever_beside_another_medicine_is_context_only():
    card = cards(v.albuterol_with_a_thiazide())["medication-review"]
    also = card["detail"].split("**Also on record**")[1].split("**Next step**")[0]
    assert "albuterol inhaler" in also
    assert "albuterol" not in card["detail"].split("**Also on record**")[0]
    assert "reliever" not in steps(card)


@pytest.mark.parametrize("build", [v.albuterol_with_potassium_32, v.salmeterol_with_potassium_32])
def test_the_low_potassium_step_names_the_beta2_agonist_on_record(build):
    advice = steps(cards(build())["primary-care-workup"])
    assert "the beta-2 agonist on record lowers it" in advice
    assert advice.count("Replace potassium") == 1


def test_the_low_potassium_step_names_no_beta2_agonist_not_taken():
    advice = steps(cards(v.potassium_32_without_a_beta2_agonist())["primary-care-workup"])
    assert "Replace potassium and find the cause (diuretics, vomiting, diarrhea)." in advice
    assert "beta-2" not in advice


def test_albuterol_tablets_are_not_called_the_reliever():
    card = cards(v.oral_albuterol_with_potassium_32())["medication-review"]
    advice = steps(card)
    assert "Beta-2 agonist tablets are not a reliever inhaler" in advice
    assert "Do not stop the reliever" not in advice and "short-acting" not in card["detail"]
    evidence = card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    # Placed by its product code; its name does not put it in the inhaled class as well.
    assert "Beta-2 agonist, oral tablet" in evidence and "RxNorm 359144" in evidence
    assert evidence.count("albuterol") == 1
    assert "medication-review" not in cards(v.oral_albuterol_alone())


@pytest.mark.parametrize(
    "text, ingredient",
    [
        (v.BREO, "vilanterol"),
        ("Breo Ellipta 100/25 inhaler", "vilanterol"),
        ("Trelegy Ellipta inhaler", "vilanterol"),
        ("olodaterol 2.5 MCG/ACTUAT Inhalation Spray", "olodaterol"),
        ("Stiolto Respimat inhaler", "olodaterol"),
        ("indacaterol 75 MCG Inhalation Powder", "indacaterol"),
        ("arformoterol 15 MCG in 2 ML Inhalation Solution", "arformoterol"),
    ],
)
def test_the_newer_long_acting_agonists_are_recognised(text, ingredient):
    card = cards(hook_request(medication(None, text), *normal_workup()))["medication-review"]
    assert "Beta-2 agonist, long-acting" in card["detail"]
    assert card["summary"] == f"Review cramp-linked medicine: {ingredient}"
    assert "review the inhaler regimen" in steps(card)


def _classes_of(resource: dict) -> set[str]:
    """The classes the medication review's classifier puts one order in."""
    ruleset = CdsService(Settings.from_env({}, today="2026-11-24")).ruleset
    route = next(r for r in ruleset.routes if r.code == "medication-review")
    no_medication_resource = SimpleNamespace(medication_of=lambda _resource: None)
    matches = route.medications.classify(resource, no_medication_resource)
    return {info.drug_class for info, _how in matches}


@pytest.mark.parametrize(
    "resource, classes",
    [
        (medication(*v.ALBUTEROL_ER_TABLET), {"beta2-agonist-oral"}),
        (medication("197318", "albuterol 4 MG Oral Tablet"), {"beta2-agonist-oral"}),
        (medication(*v.ALBUTEROL_INHALER), {"beta2-agonist-short-acting"}),
        (medication(None, "albuterol inhaler"), {"beta2-agonist-short-acting"}),
        (medication("435", "albuterol"), {"beta2-agonist-short-acting"}),
    ],
)
def test_albuterol_is_placed_by_its_form_code_and_its_name_adds_no_other_class(resource, classes):
    assert _classes_of(resource) == classes


def test_an_inhaled_steroid_alone_is_not_a_beta2_agonist():
    assert "medication-review" not in cards(v.fluticasone_inhaler_alone())


@pytest.mark.skipif(not SYNTHEA_DIR.exists(), reason="shared records not present")
def test_lance_johnstons_1984_inhaler_no_longer_makes_a_card():
    [path] = [p for p in synthea_files() if p.name.startswith("Lance_Johnston")]
    service = CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})
    found = service.evaluate(chart_request(path)).response["cards"]
    assert not any("albuterol" in c["summary"] for c in found)
    assert any(c["summary"].startswith("Primary care workup") for c in found)


# --- Review 10, second review: a statin with a CK of 1000 U/L or more in the last 30 days.


def test_a_statin_with_a_ck_of_2480_ten_days_ago_is_told_to_stop():
    card = cards(v.statin_with_ck_2480_10_days_ago())["medication-review"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Stop the statin, recheck CK: atorvastatin")
    assert "2480" in card["summary"]
    evidence = card["detail"].split("**Evidence**")[1].split("**Next step**")[0]
    assert "Creatine kinase 2480 U/L on 2026-11-14" in evidence
    advice = steps(card)
    assert advice.strip() == (
        "Stop the statin and recheck CK and creatinine now (AHA/ACC 2018 cholesterol"
        " guideline, statin-associated muscle symptoms)."
    )
    assert "lower dose" not in card["detail"]  # never "stop" and "lower the dose" together
    assert "urgent-care" not in cards(v.statin_with_ck_2480_10_days_ago())


@pytest.mark.parametrize(
    "build", [v.statin_with_ck_400_10_days_ago, v.statin_with_ck_2480_45_days_ago, v.statin_alone]
)
def test_no_stop_below_1000_or_older_than_30_days(build):
    card = cards(build())["medication-review"]
    assert card["summary"] == "Review cramp-linked medicine: atorvastatin"
    assert card["indicator"] == "info"
    assert "Stop the statin" not in card["detail"] and "lower dose" in steps(card)


def test_a_normal_recheck_since_clears_the_stop():
    card = cards(v.statin_with_ck_2480_rechecked_normal())["medication-review"]
    assert "Stop the statin" not in card["detail"]


def test_the_stop_leads_beside_another_medicine():
    card = cards(v.statin_and_salmeterol_with_ck_2480_10_days_ago())["medication-review"]
    assert card["summary"].startswith("Stop the statin, recheck CK")
    advice = steps(card)
    assert advice.index("Stop the statin") < advice.index("inhaler regimen")
    assert "lower dose" not in advice


def test_within_three_days_the_urgent_card_holds_the_stop_and_nothing_contradicts_it():
    found = cards(v.statin_with_ck_2480())
    assert found["urgent-care"]["indicator"] == "critical"
    assert "Stop the statin" in steps(found["urgent-care"])
    medication = steps(found["medication-review"])
    assert "Stop the statin" not in medication and "lower dose" not in medication
    assert "Urgent care" in medication


def _order_card(ck: float, when: str) -> list[dict]:
    import test_order_checks as oc

    service = CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})
    statin = oc.medicine("m2", "617312", "atorvastatin 10 MG Oral Tablet [Lipitor]")
    request = oc.set_observation(oc.order_request(oc.VASCULAR_CHART, statin), "2157-6", ck, when)
    return oc.cards(service, request)


def test_a_statin_drafted_with_a_ck_of_2480_ten_days_ago_waits():
    [card] = _order_card(2480, "2026-11-14")
    assert card["indicator"] == "warning"
    assert card["source"]["topic"]["code"] == "medication-review"
    assert "Do not start the statin yet" in card["detail"]
    assert "Recheck CK and creatinine" in card["detail"]
    # within 3 days the critical same-day check still comes first
    [urgent] = _order_card(2480, "2026-11-23")
    assert urgent["indicator"] == "critical"


@pytest.mark.parametrize("ck, when", [(400, "2026-11-14"), (2480, "2026-10-10")])
def test_a_statin_drafted_with_a_lower_or_older_ck_is_silent(ck, when):
    assert _order_card(ck, when) == []


# --- Review 10, second review: reliever wording; levalbuterol and terbutaline by name.


def test_the_reliever_card_summary_asks_how_often_it_is_used():
    card = cards(v.albuterol_with_potassium_32())["medication-review"]
    assert card["summary"].startswith(
        "Reliever, low potassium: ask how often it is used: albuterol"
    )
    assert "Review cramp-linked medicine" not in card["summary"]
    # beside another medicine the general summary stays
    both = cards(v.albuterol_and_statin_with_potassium_32())["medication-review"]
    assert both["summary"].startswith("Review cramp-linked medicine: atorvastatin")


def test_levalbuterol_is_a_short_acting_reliever_by_name():
    assert "medication-review" not in cards(v.levalbuterol_alone())
    card = cards(v.levalbuterol_with_potassium_32())["medication-review"]
    assert "Beta-2 agonist, short-acting" in card["detail"] and "matched by name" in card["detail"]
    assert steps(card).strip().startswith("Do not stop the reliever.")
    assert card["summary"].startswith("Reliever, low potassium: ask how often it is used")


def test_terbutaline_tablets_are_an_oral_beta2_agonist_by_name():
    card = cards(v.terbutaline_with_potassium_32())["medication-review"]
    assert "Beta-2 agonist, oral tablet" in card["detail"]
    advice = steps(card)
    assert "Beta-2 agonist tablets are not a reliever inhaler" in advice
    assert "Do not stop the reliever" not in advice
    assert card["summary"].startswith("Beta-2 agonist tablets, low potassium: review them")
    assert "beta-2 agonist on record" in steps(
        cards(v.terbutaline_with_potassium_32())["primary-care-workup"]
    )


@pytest.mark.parametrize(
    "resource, classes",
    [
        (medication(*v.LEVALBUTEROL), {"beta2-agonist-short-acting"}),
        (medication(None, "Xopenex HFA inhaler"), {"beta2-agonist-short-acting"}),
        (medication(*v.TERBUTALINE), {"beta2-agonist-oral"}),
    ],
)
def test_the_new_names_are_placed_in_one_class(resource, classes):
    assert _classes_of(resource) == classes
