"""FHIR status and date semantics the rules rely on: which statuses count, which date is a
resource's clinical date, and how FHIR dates are read (aware datetimes, UTC when unzoned)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any

from cds_service.engine.shapes import Resource
from cds_service.engine.terminology import codings_of
from cds_service.engine.validation import ABATEMENT_VARIANTS

CONDITION_ACTIVE = {"active", "recurrence", "relapse"}
CONDITION_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
OBSERVATION_FINAL = {"final", "amended", "corrected"}
PROCEDURE_DONE = {"completed", "in-progress"}
MEDICATION_ACTIVE = {"active", "on-hold"}
REFERRAL_OPEN = {"active", "on-hold"}  # a draft is only proposed, not yet a referral


def parse_datetime(value: object) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware datetime (dates and naive times as UTC)."""
    if not isinstance(value, str) or not 4 <= len(value) <= 64:
        return None
    return _parse_datetime(value)


@lru_cache(maxsize=16384)  # lab panels share their timestamps, charts repeat across calls
def _parse_datetime(value: str) -> datetime | None:
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@lru_cache(maxsize=16384)
def instant(value: str) -> tuple[float, datetime] | None:
    """(POSIX timestamp, datetime) of a FHIR dateTime string, remembered like the parse."""
    when = _parse_datetime(value)
    return (when.timestamp(), when) if when is not None else None


def _status_code(concept: object) -> str | None:
    for _system, code, _display in codings_of(concept):
        return code
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and isinstance(raw := coding.get("code"), str):
            return raw
    return None


def condition_counts(resource: Resource) -> bool:
    """Active (or no status), not abated, and neither refuted nor entered in error.

    An abatement date contradicts an "active" status (FHIR invariant con-4): such a
    record is treated as resolved rather than firing a rule on inconsistent data.
    """
    clinical = _status_code(resource.get("clinicalStatus"))
    verification = _status_code(resource.get("verificationStatus"))
    if verification in CONDITION_EXCLUDED_VERIFICATION:
        return False
    for name in ABATEMENT_VARIANTS:  # a plain loop: any() over a generator costs more
        if resource.get(name) not in (False, None):
            return False
    return clinical is None or clinical in CONDITION_ACTIVE


def condition_dates(resource: Resource) -> tuple[datetime | None, datetime | None]:
    """(onset, recorded date): problem lists often carry only one, or a late recording."""
    onset = resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
    return parse_datetime(onset), parse_datetime(resource.get("recordedDate"))


def condition_date(resource: Resource) -> datetime | None:
    """When the condition started, or failing that, when it was recorded."""
    onset, recorded = condition_dates(resource)
    return onset or recorded


def observation_date(resource: Resource) -> datetime | None:
    period = _period(resource, "effectivePeriod")
    return (
        parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(resource.get("effectiveInstant"))
        or parse_datetime(period.get("end"))
        or parse_datetime(period.get("start"))
        or parse_datetime(resource.get("issued"))
    )


def procedure_date(resource: Resource) -> datetime | None:
    period = _period(resource, "performedPeriod")
    return (
        parse_datetime(resource.get("performedDateTime"))
        or parse_datetime(period.get("end"))
        or parse_datetime(period.get("start"))
    )


def medication_date(resource: Resource) -> datetime | None:
    period = _period(resource, "effectivePeriod")
    return (
        parse_datetime(resource.get("authoredOn"))
        or parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(period.get("start"))
    )


def _period(resource: Resource, name: str) -> dict[str, Any]:
    period = resource.get(name)
    return period if isinstance(period, dict) else {}


def reference_to(resource: Resource) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return None
