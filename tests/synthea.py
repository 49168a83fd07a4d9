"""Turn the real (Synthea) transaction bundles of ../shared/fhir-real into CDS Hooks requests.

The bundles are read as they are; only a copy is changed in memory: ``urn:uuid:``
references become ``Type/id`` (as a FHIR server would answer) and, where a test asks,
a leg-cramp Condition is added, since none of the patients has one coded.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import cache
from pathlib import Path

import orjson

from cds_service.gallery import charts

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHEA_DIR = SHARED / "fhir-real" / "synthea"
PREFETCH_TYPES = {
    "conditions": "Condition",
    "observations": "Observation",
    "procedures": "Procedure",
    "medications": "MedicationRequest",
    "medicationstatements": "MedicationStatement",
    "servicerequests": "ServiceRequest",
}


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA_DIR.glob("*.json"))


@cache
def _text(path: str) -> bytes:
    """The chart's resources as JSON with references rewritten; parsed again per call, which
    is several times faster than a deep copy of the parsed form."""
    bundle = json.loads(Path(path).read_text())
    ids = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if entry.get("fullUrl", "").startswith("urn:uuid:"):
            ids[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    text = re.sub(
        r'"(urn:uuid:[0-9a-fA-F-]+)"', lambda m: f'"{ids.get(m.group(1), m.group(1))}"', text
    )
    return text.encode()


@cache
def _load(path: str) -> tuple[dict, tuple[dict, ...]]:
    """(Patient, every resource), parsed once: for reading only (never changed)."""
    resources = tuple(orjson.loads(_text(path)))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return patient, resources


def patient_resources(path: Path) -> tuple[dict, list[dict]]:
    """(Patient, every resource) with references rewritten; a fresh copy per call."""
    resources = orjson.loads(_text(str(path)))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return patient, resources


def newest_date(path: Path) -> str:
    """The newest clinical date (YYYY-MM-DD) in a chart: its "now" when it was exported, as
    the gallery reads it (``cds_service.gallery.charts.newest_date``)."""
    _patient, resources = _load(str(path))
    newest = charts.newest_date(resources)
    return newest.isoformat() if newest else ""


def condition(
    patient_id: str, rid: str, code: dict, onset: str, subject: str | None = None
) -> dict:
    """An active, confirmed Condition of ``code`` (a CodeableConcept) for the patient;
    ``subject``: its reference as written, when not ``Patient/{patient_id}`` (a bundle's
    ``urn:uuid:``)."""
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": code,
        "subject": {"reference": subject or f"Patient/{patient_id}"},
        "onsetDateTime": onset,
    }


def leg_cramp_condition(patient_id: str, onset: str = "2026-11-01") -> dict:
    cramp = {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                "code": "R25.2",
                "display": "Cramp and spasm",
            }
        ]
    }
    return condition(patient_id, "leg-cramps-" + uuid.uuid4().hex[:8], cramp, onset)


def searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def hook_request(
    path: Path, with_cramps: bool = True, observation_codes=None, cramp_onset: str = "2026-11-01"
) -> dict:
    """A patient-view request whose prefetch holds the patient's data, as a server would."""
    patient, resources = patient_resources(path)
    if with_cramps:
        resources.append(leg_cramp_condition(patient["id"], cramp_onset))
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    prefetch = {"patient": patient}
    for key, rtype in PREFETCH_TYPES.items():
        chosen = by_type.get(rtype, [])
        if key == "medications":
            chosen = [r for r in chosen if r.get("status") in {"active", "on-hold"}]
        if key == "medicationstatements":
            chosen = [r for r in chosen if r.get("status") == "active"]
        if key == "servicerequests":
            chosen = [r for r in chosen if r.get("status") == "active"]
        if key == "observations" and observation_codes is not None:
            chosen = [
                r
                for r in chosen
                if any(
                    (c.get("system"), c.get("code")) in observation_codes
                    for c in r.get("code", {}).get("coding", [])
                )
            ]
        prefetch[key] = searchset(chosen)
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": prefetch,
    }
