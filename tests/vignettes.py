"""Clinical vignettes of issue 22's defects (next steps that did not fit the record), each
with its near miss, as hook requests. ``test_next_steps.py`` asserts on each card;
``corpus.py`` runs the Done-when properties over all of them too.
"""

from __future__ import annotations

from collections.abc import Callable

from routes_helpers import (
    condition,
    hook_request,
    medication,
    normal_workup,
    observation,
    procedure,
    service_request,
)

STATIN = ("617312", "atorvastatin 10 MG Oral Tablet")


def lead_48_on_the_card() -> dict:
    return hook_request(observation("5671-3", 48, "ug/dL", 5), *normal_workup())


def lead_exposure_without_a_level() -> dict:
    return hook_request(condition("Z77.011", onset=5), *normal_workup())


def abi_072_on_the_card() -> dict:
    abi = observation("446841001", 0.72, "1", 20, system="snomed")
    return hook_request(condition("63491006", onset=200), abi, *normal_workup())


def claudication_without_abi() -> dict:
    return hook_request(condition("63491006", onset=200), *normal_workup())


def statin_with_ck_2480() -> dict:
    ck = observation("2157-6", 2480, "U/L", 1)
    return hook_request(medication(*STATIN), ck, *normal_workup())


def statin_alone() -> dict:
    return hook_request(medication(*STATIN), *normal_workup())


def salmeterol_alone() -> dict:
    return hook_request(medication(None, "salmeterol 50 mcg inhaler"), *normal_workup())


def albuterol_alone() -> dict:
    return hook_request(medication("745752", "albuterol inhaler"), *normal_workup())


def tsh_12_untreated_hypothyroidism() -> dict:
    tsh = observation("3016-3", 12.0, "m[IU]/L", 10)
    return hook_request(condition("E03.9", onset=400), tsh, *normal_workup())


def tsh_12_on_levothyroxine() -> dict:
    tsh = observation("3016-3", 12.0, "m[IU]/L", 10)
    levo = medication(None, "levothyroxine 50 mcg tablet")
    return hook_request(condition("E03.9", onset=400), tsh, levo, *normal_workup())


def dialysis_with_potassium_68() -> dict:
    return hook_request(
        condition("428982002", onset=700),
        condition("46177005", onset=700),
        observation("2823-3", 6.8, "mmol/L", 1),
    )


def ckd4_with_egfr_22() -> dict:
    egfr = observation("98979-8", 22, "mL/min/{1.73_m2}", 11)
    return hook_request(condition("431857002", onset=900), egfr, *normal_workup())


def ckd3_with_one_high_potassium() -> dict:
    return hook_request(condition("433144002", onset=900), observation("2823-3", 5.8, "mmol/L", 3))


def coded_dvt() -> dict:
    return hook_request(condition("I82.401", onset=2), *normal_workup())


def coded_dvt_in_pregnancy() -> dict:
    return hook_request(
        condition("I82.401", onset=2), condition("Z33.1", onset=120), *normal_workup()
    )


def suspected_dvt() -> dict:
    return hook_request(
        condition("449614009", onset=1),
        observation("48065-7", 900, "ng/mL{FEU}", 1),
        *normal_workup(),
    )


def clti_with_abi_048() -> dict:
    abi = observation("446841001", 0.48, "1", 15, system="snomed")
    return hook_request(condition("233962007", onset=60), abi, *normal_workup())


def calcium_low_six_days_after_thyroidectomy() -> dict:
    return hook_request(
        condition("E89.2", onset=6),
        observation("17861-6", 7.6, "mg/dL", 1),
        *normal_workup(40),
    )


def calcium_low_with_recent_postprocedural_hypothyroidism() -> dict:
    """E89.0 also covers hypothyroidism after radioiodine: not a sign of neck surgery."""
    return hook_request(
        condition("E89.0", onset=6),
        observation("17861-6", 7.6, "mg/dL", 1),
        *normal_workup(40),
    )


def postprocedural_hypothyroidism_years_ago() -> dict:
    return hook_request(condition("E89.0", onset=2000), *normal_workup())


def hyperthyroidism_coded_without_tsh() -> dict:
    return hook_request(condition("34486009", onset=300), *normal_workup())


def tsh_suppressed_uncoded() -> dict:
    return hook_request(observation("3016-3", 0.05, "m[IU]/L", 10), *normal_workup())


# Diabetic polyneuropathy coded in the last year (E11.42, 100 days ago) with leg cramps: one
# card, whichever specialist leads (route-guide §2.2), and each near miss.
def polyneuropathy_with_hba1c_10_2() -> dict:
    hba1c = observation("4548-4", 10.2, "%", 30)
    return hook_request(condition("E11.42", onset=100), hba1c, *normal_workup())


def polyneuropathy_with_hba1c_7() -> dict:
    hba1c = observation("4548-4", 7.0, "%", 30)
    return hook_request(condition("E11.42", onset=100), hba1c, *normal_workup())


def polyneuropathy_without_hba1c() -> dict:
    return hook_request(condition("E11.42", onset=100), *normal_workup())


def polyneuropathy_coded_uncontrolled_without_hba1c() -> dict:
    return hook_request(
        condition("E11.42", onset=100), condition("E11.65", onset=100), *normal_workup()
    )


def diabetes_with_hba1c_10_2_no_neuropathy() -> dict:
    hba1c = observation("4548-4", 10.2, "%", 30)
    return hook_request(condition("E11.9", onset=400), hba1c, *normal_workup())


# Review 10, M8: albuterol makes a card only beside a low potassium; the low-potassium step
# names beta-2 agonists only when one is on record; albuterol tablets are not "the
# reliever"; the newer long-acting agonists (vilanterol...) are recognised.
ALBUTEROL_INHALER = ("745752", "albuterol inhaler")
ALBUTEROL_ER_TABLET = ("359144", "12 HR albuterol 4 MG Extended Release Oral Tablet")
BREO = "fluticasone furoate 100 MCG / vilanterol 25 MCG Dry Powder Inhaler [Breo Ellipta]"


def _workup_with_potassium(value: float) -> list[dict]:
    """The normal workup with its potassium replaced by ``value`` (mmol/L, 2 days ago)."""
    rest = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2823-3"]
    return [observation("2823-3", value, "mmol/L", 2), *rest]


def albuterol_with_potassium_32() -> dict:
    return hook_request(medication(*ALBUTEROL_INHALER), *_workup_with_potassium(3.2))


def albuterol_with_a_thiazide() -> dict:
    hctz = medication("310798", "Hydrochlorothiazide 25 MG Oral Tablet")
    return hook_request(medication(*ALBUTEROL_INHALER), hctz, *normal_workup())


def oral_albuterol_with_potassium_32() -> dict:
    return hook_request(medication(*ALBUTEROL_ER_TABLET), *_workup_with_potassium(3.2))


def oral_albuterol_alone() -> dict:
    return hook_request(medication(*ALBUTEROL_ER_TABLET), *normal_workup())


def potassium_32_without_a_beta2_agonist() -> dict:
    return hook_request(*_workup_with_potassium(3.2))


def salmeterol_with_potassium_32() -> dict:
    salmeterol = medication(None, "salmeterol 50 mcg inhaler")
    return hook_request(salmeterol, *_workup_with_potassium(3.2))


def vilanterol_inhaler() -> dict:
    return hook_request(medication(None, BREO), *normal_workup())


def fluticasone_inhaler_alone() -> dict:
    steroid = medication(None, "fluticasone furoate 100 MCG Dry Powder Inhaler [Arnuity Ellipta]")
    return hook_request(steroid, *normal_workup())


# Review 10: the endocrinology card's "also send a neurology referral" is left out beside a
# neurology card (fasciculations) or an open neurology referral; a completed one is no ask.
NEUROLOGY_REFERRAL = "308474002"


def polyneuropathy_with_hba1c_10_2_and_fasciculation() -> dict:
    hba1c = observation("4548-4", 10.2, "%", 30)
    fasciculation = condition("R25.3", onset=10)
    return hook_request(condition("E11.42", onset=100), fasciculation, hba1c, *normal_workup())


def polyneuropathy_with_hba1c_10_2_and_open_neurology_referral() -> dict:
    hba1c = observation("4548-4", 10.2, "%", 30)
    referral = service_request(NEUROLOGY_REFERRAL, authored=5)
    return hook_request(condition("E11.42", onset=100), hba1c, referral, *normal_workup())


def polyneuropathy_with_hba1c_10_2_and_completed_neurology_referral() -> dict:
    hba1c = observation("4548-4", 10.2, "%", 30)
    referral = service_request(NEUROLOGY_REFERRAL, status="completed", authored=200)
    return hook_request(condition("E11.42", onset=100), hba1c, referral, *normal_workup())


# A new neuropathy (G62.9 coded 30 days ago): its causes are checked only when no result of
# the last year is on record (the normal workup holds a glucose; no TSH, no HbA1c).
def new_neuropathy_with_glucose_only() -> dict:
    return hook_request(condition("G62.9", onset=30), *normal_workup())


def new_neuropathy_with_recent_tsh_and_hba1c() -> dict:
    tsh = observation("3016-3", 2.1, "m[IU]/L", 100)
    hba1c = observation("4548-4", 5.4, "%", 100)
    workup = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2345-7"]
    return hook_request(condition("G62.9", onset=30), tsh, hba1c, *workup)


def new_neuropathy_with_old_tsh_and_no_glucose() -> dict:
    tsh = observation("3016-3", 2.1, "m[IU]/L", 400)
    workup = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2345-7"]
    return hook_request(condition("G62.9", onset=30), tsh, *workup)


# --- session-10 review, vascular (tests/test_review10_vascular.py): U3, U4, M1, W2
ABI_SNOMED = "446841001"


def clti_rest_pain_with_claudication() -> dict:
    return hook_request(
        condition("428171009", onset=20), condition("63491006", onset=700), *normal_workup()
    )


def clti_with_older_occlusion() -> dict:
    return hook_request(
        condition("233962007", onset=10), condition("I74.3", onset=600), *normal_workup()
    )


def older_occlusion_alone() -> dict:
    return hook_request(condition("I74.3", onset=600), *normal_workup())


def diabetic_gangrene() -> dict:
    return hook_request(condition("E11.52", onset=50), *normal_workup())


def gangrene_with_claudication_and_abi_035() -> dict:
    abi = observation(ABI_SNOMED, 0.35, "1", 10, system="snomed")
    return hook_request(
        condition("I70.262", onset=5), condition("63491006", onset=700), abi, *normal_workup()
    )


def gangrene_undated() -> dict:
    return hook_request(condition("I70.261", onset=None), *normal_workup())


def gangrene_coded_400_days_ago() -> dict:
    return hook_request(condition("E11.52", onset=400), *normal_workup())


def rest_pain_coded_20_days_ago() -> dict:
    return hook_request(condition("I70.221", onset=20), *normal_workup())


def rest_pain_coded_400_days_ago() -> dict:
    return hook_request(condition("I70.221", onset=400), *normal_workup())


def rest_pain_begun_400_days_ago_recorded_30() -> dict:
    return hook_request(condition("I70.221", onset=400, recorded=30), *normal_workup())


def rest_pain_undated() -> dict:
    return hook_request(condition("428171009", onset=None), *normal_workup())


def old_clti_with_abi_035() -> dict:
    abi = observation(ABI_SNOMED, 0.35, "1", 10, system="snomed")
    return hook_request(condition("233962007", onset=2000), abi, *normal_workup())


def clti_with_acute_occlusion() -> dict:
    return hook_request(
        condition("233962007", onset=150), condition("I74.3", onset=3), *normal_workup()
    )


def abi_035_alone() -> dict:
    abi = observation(ABI_SNOMED, 0.35, "1", 10, system="snomed")
    return hook_request(abi, *normal_workup())


# --- clinical review, session 10: thyroid (U1, U2, M6, M7, M9)
LEVOTHYROXINE = (None, "levothyroxine 100 mcg tablet")


def tsh(value: float, days_ago: int = 10) -> dict:
    return observation("3016-3", value, "m[IU]/L", days_ago)


def thyroid_cancer_on_levothyroxine_tsh_suppressed() -> dict:
    """TSH suppression is often the goal after thyroid cancer (ATA 2015): no dose cut."""
    return hook_request(
        condition("C73", onset=3000),
        condition("E89.0", onset=2900),
        medication(*LEVOTHYROXINE),
        tsh(0.05),
        *normal_workup(),
    )


def hypothyroidism_on_levothyroxine_tsh_suppressed() -> dict:
    return hook_request(
        condition("40930008", onset=3000), medication(*LEVOTHYROXINE), tsh(0.05), *normal_workup()
    )


def block_and_replace_tsh_suppressed() -> dict:
    """Methimazole plus levothyroxine for hyperthyroidism: the endocrinologist's regimen."""
    return hook_request(
        condition("34486009", onset=300),
        medication(*LEVOTHYROXINE),
        medication(None, "methimazole 10 mg tablet"),
        tsh(0.05),
        *normal_workup(),
    )


def levothyroxine_uncoded_tsh_14() -> dict:
    return hook_request(medication(*LEVOTHYROXINE), tsh(14), *normal_workup())


def tsh_14_uncoded_untreated() -> dict:
    return hook_request(tsh(14), *normal_workup())


def old_graves_on_levothyroxine_tsh_2() -> dict:
    return hook_request(
        condition("E05.00", onset=4000),
        condition("40930008", onset=3000),
        medication(*LEVOTHYROXINE),
        tsh(2.0),
        *normal_workup(),
    )


def graves_not_on_thyroid_hormone() -> dict:
    return hook_request(condition("E05.00", onset=200), tsh(2.0), *normal_workup())


def hyperthyroidism_coded_tsh_14_untreated() -> dict:
    """Coded hyperthyroidism with a TSH above 10: hypothyroid after its treatment."""
    return hook_request(condition("E05.00", onset=900), tsh(14), *normal_workup())


def levothyroxine_uncoded_without_tsh() -> dict:
    return hook_request(medication(*LEVOTHYROXINE), *normal_workup())


def levothyroxine_uncoded_tsh_200_days_ago() -> dict:
    return hook_request(medication(*LEVOTHYROXINE), tsh(2.0, 200), *normal_workup())


def hypothyroidism_on_levothyroxine_without_tsh() -> dict:
    return hook_request(condition("E03.9", onset=900), medication(*LEVOTHYROXINE), *normal_workup())


# --- review 10, kidney (M2-M5, W1): dialysis, transplant and unstaged kidney failure
TACROLIMUS = (None, "tacrolimus 1 mg capsule")
EGFR = "98979-8"


def hemodialysis_without_labs() -> dict:
    return hook_request(condition("Z99.2", onset=700), procedure("302497006", 3))


def peritoneal_dialysis_with_potassium_31() -> dict:
    return hook_request(
        condition("N18.6", onset=700),
        procedure("71192002", 3),
        observation("2823-3", 3.1, "mmol/L", 4),
    )


def hemodialysis_with_egfr_8() -> dict:
    return hook_request(
        condition("Z99.2", onset=700),
        observation(EGFR, 8, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def ckd4_with_egfr_8() -> dict:
    return hook_request(
        condition("N18.4", onset=700),
        observation(EGFR, 8, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def crrt_for_aki_recovered() -> dict:
    return hook_request(
        procedure("714749008", 50), observation(EGFR, 55, "mL/min/{1.73_m2}", 4), *normal_workup()
    )


def hemodialysis_50_days_ago() -> dict:
    return hook_request(
        procedure("302497006", 50), observation(EGFR, 55, "mL/min/{1.73_m2}", 4), *normal_workup()
    )


def transplant_on_tacrolimus() -> dict:
    return hook_request(
        condition("161665007", onset=900), medication(*TACROLIMUS), *normal_workup()
    )


def transplant_without_calcineurin_inhibitor() -> dict:
    return hook_request(condition("161665007", onset=900), *normal_workup())


def failed_graft_back_on_hemodialysis() -> dict:
    return hook_request(
        condition("161665007", onset=4000),
        condition("Z99.2", onset=700),
        procedure("302497006", 3),
        medication(*TACROLIMUS),
        *normal_workup(),
    )


def transplant_with_egfr_25() -> dict:
    return hook_request(
        condition("236436003", onset=2000),
        observation(EGFR, 25, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def transplant_with_egfr_45() -> dict:
    return hook_request(
        condition("236436003", onset=2000),
        observation(EGFR, 45, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def chronic_renal_failure_with_egfr_50() -> dict:
    return hook_request(
        condition("90688005", onset=4000),
        observation(EGFR, 50, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def ckd4_with_egfr_50() -> dict:
    return hook_request(
        condition("N18.4", onset=4000),
        observation(EGFR, 50, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


# --- clinical review, session 10 (second pass), thyroid: antithyroid drugs, thyroid cancer
METHIMAZOLE = (None, "methimazole 10 mg tablet")


def methimazole_uncoded_tsh_14() -> dict:
    """A TSH above 10 on an antithyroid drug is over-treatment, not new hypothyroidism."""
    return hook_request(medication(*METHIMAZOLE), tsh(14), *normal_workup())


def graves_and_hypothyroidism_on_tapazole_tsh_14() -> dict:
    return hook_request(
        condition("E05.00", onset=400),
        condition("E03.9", onset=60),
        medication(None, "Tapazole 5 mg tablet"),
        tsh(14),
        *normal_workup(),
    )


def block_and_replace_tsh_14() -> dict:
    return hook_request(
        condition("E05.00", onset=400),
        medication(*LEVOTHYROXINE),
        medication(None, "carbimazole 20 mg tablet"),
        tsh(14),
        *normal_workup(),
    )


def graves_on_methimazole_tsh_2() -> dict:
    return hook_request(
        condition("E05.00", onset=400), medication(*METHIMAZOLE), tsh(2.0), *normal_workup()
    )


def thyroid_cancer_history_tsh_suppressed_no_thyroid_hormone() -> dict:
    """After thyroid cancer a suppressed TSH may be levothyroxine missing from the list."""
    return hook_request(condition("Z85.850", onset=3000), tsh(0.05), *normal_workup())


# Review 10 (second review): a statin with a CK of 1000 U/L or more in the last 30 days is
# told to stop (not only "a lower dose"); levalbuterol and terbutaline tablets are known by
# name as short-acting and oral beta-2 agonists.
LEVALBUTEROL = (None, "levalbuterol 0.63 MG in 3 ML Inhalation Solution [Xopenex]")
TERBUTALINE = (None, "terbutaline sulfate 5 MG Oral Tablet")


def statin_with_ck(value: float, days_ago: int) -> dict:
    ck = observation("2157-6", value, "U/L", days_ago)
    return hook_request(medication(*STATIN), ck, *normal_workup())


def statin_with_ck_2480_10_days_ago() -> dict:
    return statin_with_ck(2480, 10)


def statin_with_ck_400_10_days_ago() -> dict:
    return statin_with_ck(400, 10)


def statin_with_ck_2480_45_days_ago() -> dict:
    return statin_with_ck(2480, 45)


def statin_with_ck_2480_rechecked_normal() -> dict:
    old = observation("2157-6", 2480, "U/L", 10)
    recheck = observation("2157-6", 150, "U/L", 4)
    return hook_request(medication(*STATIN), old, recheck, *normal_workup())


def statin_and_salmeterol_with_ck_2480_10_days_ago() -> dict:
    ck = observation("2157-6", 2480, "U/L", 10)
    laba = medication(None, "salmeterol 50 mcg inhaler")
    return hook_request(medication(*STATIN), laba, ck, *normal_workup())


def levalbuterol_alone() -> dict:
    return hook_request(medication(*LEVALBUTEROL), *normal_workup())


def levalbuterol_with_potassium_32() -> dict:
    return hook_request(medication(*LEVALBUTEROL), *_workup_with_potassium(3.2))


def terbutaline_with_potassium_32() -> dict:
    return hook_request(medication(*TERBUTALINE), *_workup_with_potassium(3.2))


def albuterol_and_statin_with_potassium_32() -> dict:
    statin = medication(*STATIN)
    return hook_request(medication(*ALBUTEROL_INHALER), statin, *_workup_with_potassium(3.2))


VIGNETTES: list[tuple[str, Callable[[], dict]]] = [
    (build.__name__, build)
    for build in (
        lead_48_on_the_card,
        lead_exposure_without_a_level,
        abi_072_on_the_card,
        claudication_without_abi,
        statin_with_ck_2480,
        statin_alone,
        salmeterol_alone,
        albuterol_alone,
        tsh_12_untreated_hypothyroidism,
        tsh_12_on_levothyroxine,
        dialysis_with_potassium_68,
        ckd4_with_egfr_22,
        ckd3_with_one_high_potassium,
        coded_dvt,
        coded_dvt_in_pregnancy,
        suspected_dvt,
        clti_with_abi_048,
        calcium_low_six_days_after_thyroidectomy,
        postprocedural_hypothyroidism_years_ago,
        calcium_low_with_recent_postprocedural_hypothyroidism,
        hyperthyroidism_coded_without_tsh,
        tsh_suppressed_uncoded,
        polyneuropathy_with_hba1c_10_2,
        polyneuropathy_with_hba1c_7,
        polyneuropathy_without_hba1c,
        polyneuropathy_coded_uncontrolled_without_hba1c,
        diabetes_with_hba1c_10_2_no_neuropathy,
        albuterol_with_potassium_32,
        albuterol_with_a_thiazide,
        oral_albuterol_with_potassium_32,
        oral_albuterol_alone,
        potassium_32_without_a_beta2_agonist,
        salmeterol_with_potassium_32,
        vilanterol_inhaler,
        fluticasone_inhaler_alone,
        polyneuropathy_with_hba1c_10_2_and_fasciculation,
        polyneuropathy_with_hba1c_10_2_and_open_neurology_referral,
        polyneuropathy_with_hba1c_10_2_and_completed_neurology_referral,
        new_neuropathy_with_glucose_only,
        new_neuropathy_with_recent_tsh_and_hba1c,
        new_neuropathy_with_old_tsh_and_no_glucose,
        clti_rest_pain_with_claudication,
        clti_with_older_occlusion,
        older_occlusion_alone,
        diabetic_gangrene,
        gangrene_with_claudication_and_abi_035,
        gangrene_undated,
        gangrene_coded_400_days_ago,
        rest_pain_coded_20_days_ago,
        rest_pain_coded_400_days_ago,
        rest_pain_begun_400_days_ago_recorded_30,
        rest_pain_undated,
        old_clti_with_abi_035,
        clti_with_acute_occlusion,
        abi_035_alone,
        thyroid_cancer_on_levothyroxine_tsh_suppressed,
        hypothyroidism_on_levothyroxine_tsh_suppressed,
        block_and_replace_tsh_suppressed,
        levothyroxine_uncoded_tsh_14,
        tsh_14_uncoded_untreated,
        old_graves_on_levothyroxine_tsh_2,
        graves_not_on_thyroid_hormone,
        hyperthyroidism_coded_tsh_14_untreated,
        levothyroxine_uncoded_without_tsh,
        levothyroxine_uncoded_tsh_200_days_ago,
        hypothyroidism_on_levothyroxine_without_tsh,
        hemodialysis_without_labs,
        peritoneal_dialysis_with_potassium_31,
        hemodialysis_with_egfr_8,
        ckd4_with_egfr_8,
        crrt_for_aki_recovered,
        hemodialysis_50_days_ago,
        transplant_on_tacrolimus,
        transplant_without_calcineurin_inhibitor,
        failed_graft_back_on_hemodialysis,
        transplant_with_egfr_25,
        transplant_with_egfr_45,
        chronic_renal_failure_with_egfr_50,
        ckd4_with_egfr_50,
        methimazole_uncoded_tsh_14,
        graves_and_hypothyroidism_on_tapazole_tsh_14,
        block_and_replace_tsh_14,
        graves_on_methimazole_tsh_2,
        thyroid_cancer_history_tsh_suppressed_no_thyroid_hormone,
        statin_with_ck_2480_10_days_ago,
        statin_with_ck_400_10_days_ago,
        statin_with_ck_2480_45_days_ago,
        statin_with_ck_2480_rechecked_normal,
        statin_and_salmeterol_with_ck_2480_10_days_ago,
        levalbuterol_alone,
        levalbuterol_with_potassium_32,
        terbutaline_with_potassium_32,
        albuterol_and_statin_with_potassium_32,
    )
]


# Review 10, second round (kidney): one hemodialysis session for acute kidney injury is not
# "on dialysis"; magnesium asked after a kidney transplant; each dialysis lab asked unless
# itself recent.


def aki_with_one_hemodialysis_session_egfr_25() -> dict:
    """N17.9 and one hemodialysis session 40 days ago (2026-10-15), eGFR 25 now."""
    return hook_request(
        condition("N17.9", onset=45),
        procedure("302497006", 40),
        observation(EGFR, 25, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def aki_with_hemodialysis_5_days_ago_egfr_25() -> dict:
    return hook_request(
        condition("N17.9", onset=12),
        procedure("302497006", 5),
        observation(EGFR, 25, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def hemodialysis_5_days_ago() -> dict:
    return hook_request(
        procedure("302497006", 5), observation(EGFR, 55, "mL/min/{1.73_m2}", 4), *normal_workup()
    )


def aki_with_dialysis_dependence_coded() -> dict:
    return hook_request(
        condition("N17.9", onset=45),
        condition("Z99.2", onset=30),
        procedure("302497006", 40),
        observation(EGFR, 8, "mL/min/{1.73_m2}", 4),
        *normal_workup(),
    )


def transplant_without_labs() -> dict:
    return hook_request(condition("161665007", onset=900))


def transplant_with_recent_magnesium_only() -> dict:
    return hook_request(condition("161665007", onset=900), observation("2601-3", 0.85, "mmol/L", 5))


def transplant_on_tacrolimus_without_labs() -> dict:
    return hook_request(condition("161665007", onset=900), medication(*TACROLIMUS))


def peritoneal_dialysis_with_potassium_31_and_calcium() -> dict:
    return hook_request(
        condition("N18.6", onset=700),
        procedure("71192002", 3),
        observation("2823-3", 3.1, "mmol/L", 4),
        observation("17861-6", 9.0, "mg/dL", 4),
    )


VIGNETTES += [
    (build.__name__, build)
    for build in (
        aki_with_one_hemodialysis_session_egfr_25,
        aki_with_hemodialysis_5_days_ago_egfr_25,
        hemodialysis_5_days_ago,
        aki_with_dialysis_dependence_coded,
        transplant_without_labs,
        transplant_with_recent_magnesium_only,
        transplant_on_tacrolimus_without_labs,
        peritoneal_dialysis_with_potassium_31_and_calcium,
    )
]


# --- second clinical review, session 10, vascular (tests/test_review10_vascular.py)
SIMVASTATIN = (None, "simvastatin 40 mg tablet")
APIXABAN = (None, "apixaban 5 mg tablet")


def clti_on_simvastatin_with_ck_2480() -> dict:
    """The reviewer's patient: the same-day card stops the statin; the CLTI card keeps quiet."""
    ck = observation("2157-6", 2480, "U/L", 1)
    return hook_request(
        condition("I70.221", onset=20), medication(*SIMVASTATIN), ck, *normal_workup()
    )


def clti_on_simvastatin() -> dict:
    return hook_request(condition("I70.221", onset=20), medication(*SIMVASTATIN), *normal_workup())


def clti_without_statin_with_ck_2480() -> dict:
    ck = observation("2157-6", 2480, "U/L", 1)
    return hook_request(condition("I70.221", onset=20), ck, *normal_workup())


def clti_on_apixaban() -> dict:
    return hook_request(condition("I70.221", onset=20), medication(*APIXABAN), *normal_workup())


def old_clti_with_claudication() -> dict:
    return hook_request(
        condition("I70.221", onset=400), condition("63491006", onset=700), *normal_workup()
    )


def bypass_graft_gangrene() -> dict:
    return hook_request(condition("I70.362", onset=10), *normal_workup())


def bypass_graft_rest_pain() -> dict:
    return hook_request(condition("I70.421", onset=10), *normal_workup())


def bypass_graft_ulcer_right_leg() -> dict:
    return hook_request(condition("I70.634", onset=10), *normal_workup())


def bypass_graft_claudication() -> dict:
    return hook_request(condition("I70.512", onset=10), *normal_workup())


VIGNETTES += [
    (build.__name__, build)
    for build in (
        clti_on_simvastatin_with_ck_2480,
        clti_on_simvastatin,
        clti_without_statin_with_ck_2480,
        clti_on_apixaban,
        old_clti_with_claudication,
        bypass_graft_gangrene,
        bypass_graft_rest_pain,
        bypass_graft_ulcer_right_leg,
        bypass_graft_claudication,
    )
]


def undated_clti_on_simvastatin_and_apixaban() -> dict:
    """The longest CLTI card: two medicines listed, the undated note: within the budget."""
    return hook_request(
        condition("I70.221", onset=None),
        medication(None, "simvastatin 40 MG Oral Tablet [Zocor]"),
        medication(None, "apixaban 5 MG Oral Tablet [Eliquis]"),
        *normal_workup(),
    )


VIGNETTES.append(
    (undated_clti_on_simvastatin_and_apixaban.__name__, undated_clti_on_simvastatin_and_apixaban)
)


# Review 10 (third thyroid pass): hyperthyroidism already treated with an antithyroid drug is
# no "find the cause" referral; a suppressed TSH on it asks its prescriber (ATA 2016).
def graves_on_methimazole_tsh_005() -> dict:
    return hook_request(
        condition("E05.00", onset=400), medication(*METHIMAZOLE), tsh(0.05), *normal_workup()
    )


def methimazole_uncoded_tsh_005() -> dict:
    return hook_request(medication(*METHIMAZOLE), tsh(0.05), *normal_workup())


def graves_on_methimazole_without_tsh() -> dict:
    return hook_request(condition("E05.00", onset=400), medication(*METHIMAZOLE), *normal_workup())


def graves_not_on_antithyroid_drug_tsh_005() -> dict:
    return hook_request(condition("E05.00", onset=400), tsh(0.05), *normal_workup())


# Review 10, third round (kidney): each CKD lab is its own step, dropped only when that test
# is recent (a recent potassium no longer hides magnesium and calcium).
SODIUM, CREATININE, GLUCOSE, MAGNESIUM, CALCIUM = "2951-2", "2160-0", "2345-7", "2601-3", "17861-6"


def ckd4_with_recent_potassium_only() -> dict:
    """N18.4, eGFR 22 and a potassium of 5 days ago; no magnesium, calcium or panel."""
    return hook_request(
        condition("N18.4", onset=700),
        observation(EGFR, 22, "mL/min/{1.73_m2}", 4),
        observation("2823-3", 4.2, "mmol/L", 5),
    )


def ckd4_with_magnesium_60_days_ago() -> dict:
    """N18.4, a full panel with calcium 5 days ago, magnesium 60 days ago: the workup card
    (90 days) has nothing to order; the nephrology card (30 days) asks for magnesium."""
    return hook_request(
        condition("N18.4", onset=700),
        observation(EGFR, 22, "mL/min/{1.73_m2}", 4),
        observation("2823-3", 4.2, "mmol/L", 5),
        observation(SODIUM, 140, "mmol/L", 5),
        observation(CALCIUM, 9.2, "mg/dL", 5),
        observation(CREATININE, 2.6, "mg/dL", 5),
        observation(GLUCOSE, 95, "mg/dL", 5),
        observation(MAGNESIUM, 0.85, "mmol/L", 60),
    )


def ckd3_with_egfr_22_and_recent_potassium_only() -> dict:
    """N18.30 (stage 3 coded) and an eGFR of 22: the eGFR-below-30 content block."""
    return hook_request(
        condition("N18.30", onset=700),
        observation(EGFR, 22, "mL/min/{1.73_m2}", 4),
        observation("2823-3", 4.2, "mmol/L", 5),
    )


def ckd4_with_recent_magnesium_and_calcium_only() -> dict:
    """Near miss: magnesium and calcium of 5 days ago, no potassium."""
    return hook_request(
        condition("N18.4", onset=700),
        observation(EGFR, 22, "mL/min/{1.73_m2}", 4),
        observation(MAGNESIUM, 0.85, "mmol/L", 5),
        observation(CALCIUM, 9.2, "mg/dL", 5),
    )


VIGNETTES += [
    (build.__name__, build)
    for build in (
        graves_on_methimazole_tsh_005,
        methimazole_uncoded_tsh_005,
        graves_on_methimazole_without_tsh,
        graves_not_on_antithyroid_drug_tsh_005,
        ckd4_with_recent_potassium_only,
        ckd4_with_magnesium_60_days_ago,
        ckd3_with_egfr_22_and_recent_potassium_only,
        ckd4_with_recent_magnesium_and_calcium_only,
    )
]


# Session 11: an antithyroid drug taken with no TSH in 6 months is asked for one, with free T4
# and total T3 (ATA 2016: every 2-3 months once stable); a TSH of 100 days ago asks nothing.
def methimazole_uncoded_without_tsh() -> dict:
    return hook_request(medication(*METHIMAZOLE), *normal_workup())


def methimazole_uncoded_tsh_200_days_ago() -> dict:
    return hook_request(medication(*METHIMAZOLE), tsh(2.0, 200), *normal_workup())


def methimazole_uncoded_tsh_100_days_ago() -> dict:
    return hook_request(medication(*METHIMAZOLE), tsh(2.0, 100), *normal_workup())


VIGNETTES += [
    (build.__name__, build)
    for build in (
        methimazole_uncoded_without_tsh,
        methimazole_uncoded_tsh_200_days_ago,
        methimazole_uncoded_tsh_100_days_ago,
    )
]


# Session 11 (clinical review, lead): an adult blood lead of 80 ug/dL or more in the last 90
# days is a same-day evaluation (Kosnett 2007: urgent evaluation at 80 or more), even 31-90
# days old; its near misses stay the workup's (79 ug/dL: prompt evaluation; 100 days old:
# elevated) and a child's 90 ug/dL 45 days ago is not made urgent by the adult level.
# Imported here, not at the top, so that parallel appends to this file merge cleanly.
from routes_helpers import patient  # noqa: E402

LEAD_TEEN = "2011-06-01"  # 15 on CDS_TODAY 2026-11-24


def lead_adult_90_45_days_ago() -> dict:
    return hook_request(observation("5671-3", 90, "ug/dL", 45), *normal_workup())


def lead_adult_79_45_days_ago() -> dict:
    return hook_request(observation("5671-3", 79, "ug/dL", 45), *normal_workup())


def lead_adult_90_100_days_ago() -> dict:
    return hook_request(observation("5671-3", 90, "ug/dL", 100), *normal_workup())


def lead_teen_90_45_days_ago() -> dict:
    teen = patient(birth=LEAD_TEEN)
    return hook_request(observation("5671-3", 90, "ug/dL", 45), *normal_workup(), who=teen)


VIGNETTES += [
    (build.__name__, build)
    for build in (
        lead_adult_90_45_days_ago,
        lead_adult_79_45_days_ago,
        lead_adult_90_100_days_ago,
        lead_teen_90_45_days_ago,
    )
]
