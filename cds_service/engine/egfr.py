"""Estimated GFR from serum creatinine when no eGFR result is on record.

CKD-EPI 2021 creatinine equation, race-free (Inker et al., N Engl J Med 2021;385:1737).
The coefficients are the published equation itself, not a tunable threshold.
"""

from __future__ import annotations


def ckd_epi_2021(creatinine_mg_dl: float, age_years: float, sex: str) -> float:
    """eGFR in mL/min/1.73m² for an adult; ``sex`` is 'female' or 'male'."""
    female = sex == "female"
    kappa = 0.7 if female else 0.9
    alpha = -0.241 if female else -0.302
    ratio = creatinine_mg_dl / kappa
    value: float = 142.0 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age_years
    return value * 1.012 if female else value
