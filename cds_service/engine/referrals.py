"""An open referral already on record for a route, so its card never suggests a duplicate.

A referral is recognised by its code (the route's referral code or another code for the same
specialist, ``referral.recognised_by.codes`` in the route file, in whatever system it is
listed), or, when it is coded locally, by its words: ``code.text`` or a coding's ``display``
that names the route's specialty (``recognised_by.words``) and also says it is a referral
(``referral_words`` in common.yaml), both as whole words in any case. A "Renal ultrasound"
order is no nephrology referral, and "Ambulatory referral to Neurology" is no nephrology one.
Only an open request counts (active or on hold): a completed or revoked one does not.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from cds_service.engine.fhir_status import REFERRAL_OPEN

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cds_service.engine.model import Route
    from cds_service.engine.record import Record
    from cds_service.engine.shapes import Resource


def open_referral(record: Record, route: Route, referral_words: tuple[str, ...]) -> Resource | None:
    """The first open ServiceRequest that is this route's referral, by code, else by words."""
    referral = route.referral
    if referral is None or route.referral_set is None:
        return None
    for resource, _ in record.find("ServiceRequest", route.referral_set):
        if _is_open(resource):
            return resource
    if not referral.words or not referral_words:
        return None
    specialty, kind = words_pattern(referral.words), words_pattern(referral_words)
    for resource in record.resources("ServiceRequest"):
        if _is_open(resource) and names_referral(resource, specialty, kind):
            return resource
    return None


def names_referral(resource: Resource, specialty: re.Pattern[str], kind: re.Pattern[str]) -> bool:
    """Its code's text and displays name the specialty, and they or its category's say it is
    a referral (a request coded "Nephrology" under the category "Referral")."""
    texts = list(_texts(resource.get("code")))
    kinds = texts + [t for c in _listed(resource.get("category")) for t in _texts(c)]
    return any(specialty.search(t) for t in texts) and any(kind.search(t) for t in kinds)


@cache
def words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Any of the words or phrases, whole, in any case; a phrase's words may be separated by
    any white space ("vascular  surgery" across a line break too)."""
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _is_open(resource: Resource) -> bool:
    return resource.get("status") in REFERRAL_OPEN


def _listed(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _texts(code: object) -> Iterator[str]:
    """A CodeableConcept's text and its codings' displays."""
    if not isinstance(code, dict):
        return
    if isinstance(code.get("text"), str):
        yield code["text"]
    codings = code.get("coding")
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            yield coding["display"]
