"""A small builder for the FHIR resources and CDS Hooks requests the route tests use.

Dates are given as "days before today" (today is fixed to 2026-11-24), so every test reads
as the clinical story it checks: ``condition("I82.401", onset=3)`` is a DVT that began three
days ago.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import date, timedelta

import orjson

from cds_service.config import Settings
from cds_service.protocol.fhir_json import decode_request
from cds_service.service import CdsService

TODAY = date(2026, 11, 24)
# Every referral route (design.md: card.source.topic codes), in the order cards are ranked.
ROUTES = (
    "urgent-care",
    "nephrology",
    "endocrinology",
    "vascular",
    "neurology",
    "orthopedics",
    "physiatry",
    "primary-care-workup",
    "medication-review",
)
PATIENT_ID = "p-routes"
SYSTEMS = {
    "snomed": "http://snomed.info/sct",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "loinc": "http://loinc.org",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
_ids = itertools.count(1)


def day(days_ago: int | None) -> str | None:
    return None if days_ago is None else (TODAY - timedelta(days=days_ago)).isoformat()


def _system_of(code: str) -> str:
    return "snomed" if code.isdigit() else "icd10cm"


def _rid(prefix: str, rid: str | None) -> str:
    return rid or f"{prefix}-{next(_ids)}"


def condition(
    code: str,
    onset: int | None = 30,
    *,
    system: str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    recorded: int | None = None,
    display: str | None = None,
    rid: str | None = None,
) -> dict:
    """A Condition; ``onset``/``recorded`` are days before today (None: not given)."""
    resource = {
        "resourceType": "Condition",
        "id": _rid("cond", rid),
        "code": {
            "coding": [
                {
                    "system": SYSTEMS[system or _system_of(code)],
                    "code": code,
                    "display": display or code,
                }
            ]
        },
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    if clinical:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        }
    if verification:
        resource["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        }
    if onset is not None:
        resource["onsetDateTime"] = day(onset)
    if recorded is not None:
        resource["recordedDate"] = day(recorded)
    return resource


def cramp(code: str = "449918009", **kwargs) -> dict:
    """The leg-cramp problem that opens the gate (default SNOMED 'Cramp in lower leg')."""
    return condition(code, **kwargs)


def observation(
    code: str,
    value: float,
    unit: str | None,
    days_ago: int = 1,
    *,
    status: str = "final",
    system: str = "loinc",
    rid: str | None = None,
    time: str | None = None,
) -> dict:
    """An Observation with a UCUM valueQuantity (``unit`` None: no unit at all)."""
    quantity: dict = {"value": value}
    if unit is not None:
        quantity.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
    when = day(days_ago) + (f"T{time}Z" if time else "")
    return {
        "resourceType": "Observation",
        "id": _rid("obs", rid),
        "status": status,
        "code": {"coding": [{"system": SYSTEMS[system], "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
        "valueQuantity": quantity,
    }


def procedure(
    code: str, days_ago: int = 10, *, status: str = "completed", rid: str | None = None
) -> dict:
    return {
        "resourceType": "Procedure",
        "id": _rid("proc", rid),
        "status": status,
        "code": {"coding": [{"system": SYSTEMS["snomed"], "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "performedDateTime": day(days_ago),
    }


def medication(
    code: str | None,
    display: str,
    *,
    status: str = "active",
    authored: int = 60,
    text: str | None = None,
    rid: str | None = None,
) -> dict:
    """A MedicationRequest coded in RxNorm (``code`` None: text only)."""
    concept: dict = {}
    if code is not None:
        concept["coding"] = [{"system": SYSTEMS["rxnorm"], "code": code, "display": display}]
    if text is not None or code is None:
        concept["text"] = text or display
    return {
        "resourceType": "MedicationRequest",
        "id": _rid("med", rid),
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": day(authored),
    }


def service_request(
    code: str, *, status: str = "active", authored: int = 5, rid: str | None = None
) -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": _rid("sr", rid),
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": SYSTEMS["snomed"], "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": day(authored),
    }


def normal_workup(days_ago: int = 20) -> list[dict]:
    """A complete, normal initial workup, so the primary-care card has nothing to say."""
    return [
        observation("2823-3", 4.2, "mmol/L", days_ago),
        observation("2601-3", 0.85, "mmol/L", days_ago),
        observation("2951-2", 140, "mmol/L", days_ago),
        observation("17861-6", 9.4, "mg/dL", days_ago),
        observation("2160-0", 0.9, "mg/dL", days_ago),
        observation("1742-6", 22, "U/L", days_ago),
        observation("2345-7", 95, "mg/dL", days_ago),
    ]


PREFETCH_KEYS = {
    "Condition": "conditions",
    "Observation": "observations",
    "Procedure": "procedures",
    "MedicationRequest": "medications",
    "ServiceRequest": "servicerequests",
}


def searchset(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources],
    }


def patient(gender: str = "male", birth: str = "1956-03-14") -> dict:
    return {"resourceType": "Patient", "id": PATIENT_ID, "gender": gender, "birthDate": birth}


def hook_request(
    *resources: dict, gate: bool = True, who: dict | None = None, cramp_onset: int = 30
) -> dict:
    """A patient-view request with all six prefetch keys (searchset Bundles and the Patient);
    the leg-cramp problem began ``cramp_onset`` days ago (under 90: new cramps)."""
    items = ([cramp(onset=cramp_onset)] if gate else []) + list(resources)
    grouped: dict[str, list[dict]] = {key: [] for key in PREFETCH_KEYS.values()}
    for resource in items:
        grouped[PREFETCH_KEYS[resource["resourceType"]]].append(resource)
    prefetch: dict = {"patient": who or patient()}
    prefetch.update({key: searchset(value) for key, value in grouped.items()})
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": PATIENT_ID},
        "prefetch": prefetch,
    }


_SERVICE: CdsService | None = None


def service() -> CdsService:
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = CdsService(Settings.from_env({}, today=TODAY.isoformat()), fetcher=lambda *a: {})
    return _SERVICE


def evaluate(request: dict) -> dict:
    """Cards for a request, decoded from JSON as the HTTP endpoint does (fhir_json)."""
    return service().evaluate(decode_request(orjson.dumps(request))).response


def cards_of(*resources: dict, **kwargs) -> dict[str, dict]:
    """{route code: card} for a request built from ``resources``."""
    return cards_for(hook_request(*resources, **kwargs))


def cards_for(request: dict) -> dict[str, dict]:
    """{route code: card} for a hook request."""
    return {card["source"]["topic"]["code"]: card for card in evaluate(request)["cards"]}


def vignette_cards(build: Callable[[], dict]) -> dict[str, dict]:
    """{route code: card} for the request a vignette (tests/vignettes.py) builds."""
    return cards_for(build())


def next_steps(card: dict) -> str:
    """The card's next-step section (what it asks the clinician to do)."""
    detail = card["detail"]
    assert "**Next step**" in detail, detail
    return detail.split("**Next step**")[1].split("**Caveats**")[0]


def route_of(card: dict) -> str:
    return card["source"]["topic"]["code"]


def referral_resources(card: dict) -> list[dict]:
    return [action["resource"] for s in card.get("suggestions", []) for action in s["actions"]]
