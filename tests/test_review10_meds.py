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
from routes_helpers import evaluate, hook_request, medication, normal_workup
from synthea import SYNTHEA_DIR, synthea_files
from synthea import hook_request as chart_request

from cds_service.config import Settings
from cds_service.service import CdsService


def cards(request: dict) -> dict[str, dict]:
    return {c["source"]["topic"]["code"]: c for c in evaluate(request)["cards"]}


def steps(card: dict) -> str:
    return card["detail"].split("**Next step**")[1].split("**Caveats**")[0]


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
    assert "Oral albuterol is not a reliever inhaler" in advice
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
