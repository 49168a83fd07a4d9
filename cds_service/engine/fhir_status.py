"""FHIR status semantics the rules rely on: which statuses count (dates: ``reading``)."""

from __future__ import annotations

from cds_service.engine.shapes import Resource
from cds_service.engine.terminology import codings_of

CONDITION_ACTIVE = {"active", "recurrence", "relapse"}
CONDITION_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
OBSERVATION_FINAL = {"final", "amended", "corrected"}
PROCEDURE_DONE = {"completed", "in-progress"}
# Only an active order is taken now: an on-hold anticoagulant must not count as treatment of
# a new DVT (the exception that turns the emergency card into a warning), nor an on-hold
# statin as a cause of today's cramps. The prefetch still asks for on-hold orders.
MEDICATION_ACTIVE = {"active"}
REFERRAL_OPEN = {"active", "on-hold"}  # a draft is only proposed, not yet a referral


def _status_code(concept: object) -> str | None:
    for _system, code, _display in codings_of(concept):
        return code
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and isinstance(raw := coding.get("code"), str):
            return raw
    return None


def condition_counts(resource: Resource) -> bool:
    """Active (or no status), and neither refuted nor entered in error (whether it has
    abated is read with its date: ``reading.abated``)."""
    clinical = _status_code(resource.get("clinicalStatus"))
    verification = _status_code(resource.get("verificationStatus"))
    if verification in CONDITION_EXCLUDED_VERIFICATION:
        return False
    return clinical is None or clinical in CONDITION_ACTIVE


def reference_to(resource: Resource) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return None
