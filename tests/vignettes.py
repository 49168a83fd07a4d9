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
    )
]
