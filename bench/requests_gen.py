"""Realistic patient-view requests of a chosen size, sampled from the Synthea charts.

A request of N resources holds the patient, an active leg-cramp Condition (so the gate
opens and the rules run) and N-1 real resources of one Synthea patient, in the
proportions of a real chart: about 10% Conditions, 65% Observations (the labs the rules
read first, as the discovery prefetch asks), 20% Procedures and 5% MedicationRequests. The same
seed gives the same request, so runs are comparable.
"""

from __future__ import annotations

import random
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthea import (  # noqa: E402 (tests/ is put on the path above)
    SYNTHEA_DIR,
    leg_cramp_condition,
    patient_resources,  # noqa: E402
    searchset,
)

DEFAULT_CHART = SYNTHEA_DIR / "Gabriel_Blanda_95f1227c.json"
SHARES = (
    ("Condition", 0.10),
    ("Observation", 0.65),
    ("Procedure", 0.20),
    ("MedicationRequest", 0.05),
)
PREFETCH_KEY = {
    "Condition": "conditions",
    "Observation": "observations",
    "Procedure": "procedures",
    "MedicationRequest": "medications",
}


def _when(resource: dict) -> str:
    for key in ("effectiveDateTime", "authoredOn", "recordedDate", "onsetDateTime", "issued"):
        if isinstance(resource.get(key), str):
            return resource[key]
    period = resource.get("performedPeriod") or resource.get("effectivePeriod") or {}
    return period.get("start", "") if isinstance(period, dict) else ""


def _rule_codes() -> set[tuple[str, str]]:
    from cds_service.config import Settings
    from cds_service.engine import load_rules

    ruleset = load_rules(Settings.from_env({}).cards_dir)
    return {(c.system, c.code) for c in ruleset.observation_codes}


def _is_rule_lab(resource: dict, codes: set) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any((c.get("system"), c.get("code")) in codes for c in codings)


def build_request(size: int, chart: Path = DEFAULT_CHART, seed: int = 6) -> dict:
    """A patient-view request whose prefetch bundles hold ``size`` resources in total
    (Patient and leg-cramp Condition included)."""
    patient, resources = patient_resources(chart)
    rng = random.Random(seed)
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    wanted = size - 2  # the Patient and the leg-cramp Condition
    chosen: dict[str, list[dict]] = {}
    left = wanted
    codes = _rule_codes()
    for i, (rtype, share) in enumerate(SHARES):
        pool = sorted(by_type.get(rtype, []), key=_when, reverse=True)  # newest first
        if rtype == "Observation":
            # What the discovery prefetch asks for (the labs the rules read) comes first,
            # then the rest of the chart (vitals, surveys ...), as a broad query returns.
            pool = [r for r in pool if _is_rule_lab(r, codes)] + [
                r for r in pool if not _is_rule_lab(r, codes)
            ]
        count = left if i == len(SHARES) - 1 else min(round(wanted * share), left)
        if count > len(pool):
            # Short of this type: repeat real resources under fresh ids (still valid FHIR).
            extra = []
            while len(pool) + len(extra) < count:
                copy = dict(rng.choice(pool))
                copy["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
                extra.append(copy)
            pool = pool + extra
        chosen[rtype] = pool[:count]
        left -= count
    chosen["Condition"].append(leg_cramp_condition(patient["id"]))
    prefetch: dict = {"patient": patient}
    for rtype, key in PREFETCH_KEY.items():
        prefetch[key] = searchset(chosen.get(rtype, []))
    prefetch["servicerequests"] = searchset([])
    prefetch["medicationstatements"] = searchset([])  # prefetched, as an EHR would
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.UUID(int=rng.getrandbits(128))),
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": prefetch,
    }


def count_resources(request: dict) -> int:
    total = 0
    for value in request["prefetch"].values():
        total += len(value.get("entry", [])) if value.get("resourceType") == "Bundle" else 1
    return total
