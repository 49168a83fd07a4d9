"""Clinical review, session 10, thyroid items (U1, U2, M6, M7, M9): each fix as a vignette
(tests/vignettes.py, so the one-plan and card-text checks run over it too) and its near miss,
where the advice must still be given."""

from __future__ import annotations

import pytest
import vignettes as v
from routes_helpers import cards_for as cards
from routes_helpers import condition, hook_request, medication, normal_workup, observation
from routes_helpers import next_steps as steps

LOWER_THE_DOSE = "lower the dose"
TSH_LOINC = "3016-3"


def every_detail(found: dict[str, dict]) -> str:
    return "\n".join(c["summary"] + "\n" + c["detail"] for c in found.values())


def ordered_codes(card: dict) -> list[str]:
    return [
        action["resource"]["code"]["coding"][0]["code"]
        for suggestion in card.get("suggestions", [])
        for action in suggestion.get("actions", [])
        if action.get("resource", {}).get("code")
    ]


# --- U1: no "lower the dose" with thyroid cancer or coded hyperthyroidism


@pytest.mark.parametrize("cancer", ["C73", "Z85.850"])
def test_thyroid_cancer_on_thyroid_hormone_is_never_told_to_lower_the_dose(cancer):
    found = cards(
        hook_request(
            condition(cancer, onset=3000),
            condition("E89.0", onset=2900),
            medication(*v.LEVOTHYROXINE),
            v.tsh(0.05),
            *normal_workup(),
        )
    )
    assert LOWER_THE_DOSE not in every_detail(found)
    assert "endocrinology" not in found  # the suppression is the endocrinologist's plan


def test_thyroid_cancer_vignette_and_its_near_miss():
    assert LOWER_THE_DOSE not in every_detail(
        cards(v.thyroid_cancer_on_levothyroxine_tsh_suppressed())
    )
    near = cards(v.hypothyroidism_on_levothyroxine_tsh_suppressed())["primary-care-workup"]
    assert near["indicator"] == "warning"
    assert LOWER_THE_DOSE in steps(near)
    assert "Unless TSH suppression is intended" in near["detail"].split("**Caveats**")[1]


def test_block_and_replace_goes_to_endocrinology_without_a_dose_cut():
    found = cards(v.block_and_replace_tsh_suppressed())
    assert LOWER_THE_DOSE not in every_detail(found)
    card = found["endocrinology"]
    assert "block-and-replace" in steps(card) and "beta-blocker" not in steps(card)
    assert "levothyroxine" in card["detail"] and "TSH 0.05" in card["detail"]


# --- U2 and M6: a TSH above 10 is managed in primary care; never "start" what is taken


def test_levothyroxine_with_tsh_14_is_under_replacement_not_start_levothyroxine():
    found = cards(v.levothyroxine_uncoded_tsh_14())
    assert "start levothyroxine" not in every_detail(found).lower()
    assert "endocrinology" not in found
    card = found["primary-care-workup"]
    assert card["summary"].startswith("TSH above 10 on thyroid hormone")
    assert card["indicator"] == "warning"
    text = steps(card)
    assert "adherence" in text and "calcium, iron or a PPI" in text
    assert "recheck TSH in 6-8 weeks" in text
    assert "Refer to endocrinology only if the TSH stays high" in text
    assert "Check CK" in text and ordered_codes(card) == ["2157-6"]  # CK, not TSH again
    near = steps(cards(v.tsh_14_uncoded_untreated())["primary-care-workup"])
    assert "start levothyroxine" in near and "adherence" not in near


@pytest.mark.parametrize(
    "build, says, never",
    [
        (v.tsh_12_on_levothyroxine, "adherence", "start levothyroxine"),
        (v.tsh_12_untreated_hypothyroidism, "no thyroid hormone on record", "adherence"),
    ],
)
def test_hypothyroidism_with_tsh_above_10_is_primary_care_not_a_referral(build, says, never):
    found = cards(build())
    assert "endocrinology" not in found
    card = found["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert says in steps(card) and never not in steps(card)
    assert "Refer to endocrinology:" not in card["summary"]
    assert not [c for c in ordered_codes(card) if c == "306278007"]  # no referral button


def test_a_tsh_of_10_or_less_on_levothyroxine_gets_no_dose_advice():
    found = cards(hook_request(medication(*v.LEVOTHYROXINE), v.tsh(9.5), *normal_workup()))
    assert "adherence" not in every_detail(found) and "endocrinology" not in found


def test_thyroid_cancer_with_a_high_tsh_tells_the_endocrinologist():
    card = cards(
        hook_request(
            condition("C73", onset=3000), medication(*v.LEVOTHYROXINE), v.tsh(14), *normal_workup()
        )
    )["primary-care-workup"]
    assert "the endocrinologist sets its TSH target" in steps(card)
    assert "sets its TSH target" not in steps(
        cards(v.levothyroxine_uncoded_tsh_14())["primary-care-workup"]
    )


# --- M7: an old Graves' now on levothyroxine is judged by its TSH


def test_old_graves_on_levothyroxine_with_normal_tsh_gets_no_hyperthyroidism_referral():
    found = cards(v.old_graves_on_levothyroxine_tsh_2())
    assert "endocrinology" not in found
    assert "beta-blocker" not in every_detail(found)
    near = cards(v.graves_not_on_thyroid_hormone())["endocrinology"]
    assert "Refer to endocrinology for hyperthyroidism" in steps(near)


def test_coded_hyperthyroidism_with_tsh_above_10_gets_no_beta_blocker():
    card = cards(v.hyperthyroidism_coded_tsh_14_untreated())["endocrinology"]
    assert "beta-blocker" not in steps(card).replace("(no beta-blocker)", "")
    assert "likely hypothyroid after its treatment" in steps(card)


# --- M9: thyroid hormone with no TSH in a year: one TSH request


def _tsh_requests(found: dict[str, dict]) -> int:
    asked = sum(
        steps(c).count("Order TSH") for c in found.values() if "**Next step**" in c["detail"]
    )
    return asked


def test_levothyroxine_without_coded_thyroid_disease_gets_one_tsh_request():
    found = cards(v.levothyroxine_uncoded_without_tsh())
    card = found["primary-care-workup"]
    assert "Order TSH: thyroid hormone is taken with no TSH in a year" in steps(card)
    assert _tsh_requests(found) == 1
    assert ordered_codes(card).count(TSH_LOINC) == 1
    near = cards(v.levothyroxine_uncoded_tsh_200_days_ago())
    assert "TSH" not in every_detail(near)


def test_hypothyroidism_on_levothyroxine_without_tsh_is_asked_once():
    found = cards(v.hypothyroidism_on_levothyroxine_without_tsh())
    card = found["primary-care-workup"]
    assert _tsh_requests(found) == 1
    assert "hypothyroid myopathy" in steps(card) and "thyroid hormone is taken" not in steps(card)
    assert ordered_codes(card).count(TSH_LOINC) == 1


def test_coded_hyperthyroidism_on_levothyroxine_without_tsh_is_asked_once():
    found = cards(
        hook_request(
            condition("E05.00", onset=4000), medication(*v.LEVOTHYROXINE), *normal_workup()
        )
    )
    assert "endocrinology" not in found
    assert _tsh_requests(found) == 1
    assert "hyperthyroidism is on record" in steps(found["primary-care-workup"])


# --- Second pass (session 10): antithyroid drugs, thyroid cancer off thyroid hormone, and the
# polyneuropathy card's neurology referral

OVER_TREATMENT = "likely over-treatment. Ask the prescriber to lower it"
REFERRAL = "306278007"


def test_tsh_14_on_methimazole_is_over_treatment_not_new_hypothyroidism():
    found = cards(v.methimazole_uncoded_tsh_14())
    assert "start levothyroxine" not in every_detail(found).lower()
    assert "primary-care-workup" not in found
    card = found["endocrinology"]
    assert card["summary"].startswith("TSH above 10 on an antithyroid drug, ask its prescriber")
    assert OVER_TREATMENT in steps(card) and "do not add levothyroxine" in steps(card)
    assert "methimazole 10 mg tablet: Antithyroid drug" in card["detail"]
    assert REFERRAL not in ordered_codes(card)  # the prescriber lowers it: no referral button
    near = cards(v.tsh_14_uncoded_untreated())
    assert "start levothyroxine" in steps(near["primary-care-workup"])
    assert "endocrinology" not in near


@pytest.mark.parametrize(
    "drug",
    [
        "methimazole 5 mg tablet",
        "Tapazole 10 mg tablet",
        "carbimazole 20 mg tablet",
        "propylthiouracil 50 mg tablet",
        "PTU 50 mg tablet",
    ],
)
def test_every_antithyroid_drug_is_recognised_by_name(drug):
    found = cards(hook_request(medication(None, drug), v.tsh(14), *normal_workup()))
    assert OVER_TREATMENT in steps(found["endocrinology"])
    assert "start levothyroxine" not in every_detail(found).lower()


def test_graves_with_hypothyroidism_on_methimazole_and_tsh_14_makes_one_card():
    found = cards(v.graves_and_hypothyroidism_on_tapazole_tsh_14())
    assert list(found) == ["endocrinology"]  # not also "if untreated, start levothyroxine"
    card = found["endocrinology"]
    assert OVER_TREATMENT in steps(card)
    assert "refer to endocrinology to review it" not in steps(card)
    assert "E05.00" in card["detail"] and "E03.9" in card["detail"]


def test_coded_hyperthyroidism_with_hypothyroidism_and_tsh_14_off_drugs_is_one_card():
    found = cards(
        hook_request(
            condition("E05.00", onset=900),
            condition("E03.9", onset=60),
            v.tsh(14),
            *normal_workup(),
        )
    )
    assert list(found) == ["endocrinology"]
    assert "likely hypothyroid after its treatment" in steps(found["endocrinology"])
    assert OVER_TREATMENT not in steps(found["endocrinology"])
    # The near miss: hypothyroidism alone with that TSH is primary care's to treat.
    near = cards(v.tsh_12_untreated_hypothyroidism())
    assert "start levothyroxine" in steps(near["primary-care-workup"])


def test_block_and_replace_with_tsh_14_goes_to_its_prescriber_not_a_dose_check():
    found = cards(v.block_and_replace_tsh_14())
    assert list(found) == ["endocrinology"]
    text = steps(found["endocrinology"])
    assert "(block-and-replace): ask the prescriber to adjust the doses" in text
    assert "adherence" not in every_detail(found) and OVER_TREATMENT not in text
    near = steps(cards(v.levothyroxine_uncoded_tsh_14())["primary-care-workup"])
    assert "adherence" in near


def test_antithyroid_drug_with_a_normal_tsh_gets_no_over_treatment_step():
    found = cards(v.graves_on_methimazole_tsh_2())
    assert OVER_TREATMENT not in every_detail(found)
    assert "adjust the doses" not in every_detail(found)


def test_uncoded_block_and_replace_with_suppressed_tsh_is_not_told_to_lower_the_dose():
    found = cards(
        hook_request(
            medication(*v.LEVOTHYROXINE), medication(*v.METHIMAZOLE), v.tsh(0.05), *normal_workup()
        )
    )
    assert LOWER_THE_DOSE not in every_detail(found)
    assert "block-and-replace" in steps(found["endocrinology"])


def test_thyroid_cancer_with_suppressed_tsh_off_thyroid_hormone_asks_first():
    card = cards(v.thyroid_cancer_history_tsh_suppressed_no_thyroid_hormone())["endocrinology"]
    text = steps(card)
    assert "thyroid hormone may be taken but not recorded" in text
    assert "beta-blocker" not in text
    assert "Z85.850" in card["detail"]
    near = steps(cards(v.tsh_suppressed_uncoded())["endocrinology"])
    assert "beta-blocker may ease symptoms" in near and "not recorded" not in near


def test_polyneuropathy_card_says_the_neurology_referral_is_ordered_separately():
    card = cards(v.polyneuropathy_with_hba1c_10_2())["endocrinology"]
    assert card["summary"].startswith("Refer to endocrinology and neurology")
    assert "order it separately: this card's button is the endocrinology referral" in steps(card)
    assert ordered_codes(card) == [REFERRAL] and len(card["detail"]) <= 900


# --- Third pass (session 10): hyperthyroidism already treated with an antithyroid drug

FIND_THE_CAUSE = "to find the cause"


def test_graves_on_methimazole_with_a_normal_tsh_makes_no_card():
    found = cards(v.graves_on_methimazole_tsh_2())
    assert "endocrinology" not in found
    assert FIND_THE_CAUSE not in every_detail(found) and "beta-blocker" not in every_detail(found)
    # The near miss: the same Graves' with no antithyroid drug is still referred.
    near = steps(cards(v.graves_not_on_thyroid_hormone())["endocrinology"])
    assert FIND_THE_CAUSE in near and "beta-blocker may ease symptoms" in near


@pytest.mark.parametrize("build", [v.graves_on_methimazole_tsh_005, v.methimazole_uncoded_tsh_005])
def test_suppressed_tsh_on_an_antithyroid_drug_asks_its_prescriber(build):
    found = cards(build())
    card = found["endocrinology"]
    assert card["summary"].startswith("Low TSH on an antithyroid drug, ask its prescriber")
    text = steps(card)
    assert "ask its prescriber whether free T4 and T3 are controlled" in text
    assert FIND_THE_CAUSE not in every_detail(found) and "beta-blocker" not in every_detail(found)
    assert "Confirm the suppressed TSH" not in text
    assert "methimazole 10 mg tablet: Antithyroid drug" in card["detail"]
    assert REFERRAL not in ordered_codes(card)  # its prescriber manages it


def test_suppressed_tsh_without_an_antithyroid_drug_is_still_referred():
    card = cards(v.graves_not_on_antithyroid_drug_tsh_005())["endocrinology"]
    assert FIND_THE_CAUSE in steps(card) and "ask its prescriber" not in steps(card)
    assert REFERRAL in ordered_codes(card)


def test_graves_on_methimazole_without_tsh_is_asked_for_one_not_referred():
    found = cards(v.graves_on_methimazole_without_tsh())
    assert "endocrinology" not in found
    card = found["primary-care-workup"]
    assert ON_ANTITHYROID in steps(card)  # its own step, on the drug (session 11)
    assert ordered_codes(card).count(TSH_LOINC) == 1


# --- Session 11: an antithyroid drug with no TSH or no free T4 in 6 months (ATA 2016: thyroid
# function every 2-3 months once stable; the TSH may stay suppressed for months)
ON_ANTITHYROID = "an antithyroid drug is taken with n"  # neither TSH nor free T4 / no TSH
FREE_T4_LOINC = "3024-7"


@pytest.mark.parametrize(
    "build", [v.methimazole_uncoded_without_tsh, v.methimazole_uncoded_tsh_200_days_ago]
)
def test_methimazole_without_a_tsh_in_6_months_gets_tsh_and_free_t4_orders(build):
    found = cards(build())
    card = found["primary-care-workup"]
    assert "Order TSH with free T4 and total T3: " + ON_ANTITHYROID in steps(card)
    assert _tsh_requests(found) == 1
    assert ordered_codes(card).count(TSH_LOINC) == 1
    assert ordered_codes(card).count(FREE_T4_LOINC) == 1
    assert "TSH (6 months" in card["detail"] and "free T4 (6 months" in card["detail"]
    assert "endocrinology" not in found  # a normal or no TSH says nothing abnormal yet


def test_methimazole_with_a_tsh_of_100_days_ago_is_not_asked_again():
    found = cards(v.methimazole_uncoded_tsh_100_days_ago())
    assert "TSH" not in every_detail(found) and "free T4" not in every_detail(found)


def test_methimazole_with_a_recent_free_t4_is_asked_for_the_tsh_only():
    recent = observation(FREE_T4_LOINC, 1.2, "ng/dL", 100)
    found = cards(hook_request(medication(*v.METHIMAZOLE), recent, *normal_workup()))
    card = found["primary-care-workup"]
    assert "Order TSH with total T3: an antithyroid drug is taken with no TSH" in steps(card)
    assert ordered_codes(card) == [TSH_LOINC]
    assert _tsh_requests(found) == 1


@pytest.mark.parametrize("free_t4", [(1.2, "ng/dL"), (15, "pmol/L")])
def test_methimazole_with_tsh_and_free_t4_of_100_days_ago_is_not_asked_again(free_t4):
    recent = observation(FREE_T4_LOINC, *free_t4, 100)
    found = cards(
        hook_request(medication(*v.METHIMAZOLE), v.tsh(2.0, 100), recent, *normal_workup())
    )
    assert "primary-care-workup" not in found and "endocrinology" not in found


@pytest.mark.parametrize(
    "also",
    [
        [medication(*v.LEVOTHYROXINE)],  # block-and-replace
        [condition("E05.00", onset=400)],  # Graves' disease coded
        [condition("E03.9", onset=900)],  # hypothyroidism coded: over-treatment, not myopathy
    ],
)
def test_on_an_antithyroid_drug_its_own_tsh_step_is_the_one(also):
    found = cards(hook_request(medication(*v.METHIMAZOLE), *also, *normal_workup()))
    card = found["primary-care-workup"]
    assert ON_ANTITHYROID in steps(card)
    assert _tsh_requests(found) == 1  # no other TSH step beside it
    assert ordered_codes(card).count(TSH_LOINC) == 1
    for other in ("hormone is taken", "hyperthyroidism is on record", "hypothyroid myopathy"):
        assert other not in steps(card)
