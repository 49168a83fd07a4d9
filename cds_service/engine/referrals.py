"""An open referral already on record for a route, so its card never suggests a duplicate.

A referral is recognised by its code (the route's referral code or another code for the same
specialist, ``referral.recognised_by.codes`` in the route file, in whatever system it is
listed), or, when it is coded locally, by its words: ``code.text`` or a coding's ``display``
that names the route's specialty or its service (``recognised_by.words``: "nephrology",
"renal clinic", never the organ alone), says it is a referral (``referral_words`` in
common.yaml, in the code or the category), and names no other specialty (another route's
words or common.yaml's ``referral_other_specialties``, in the code or the category), all as
whole words in any case. So "Urology referral - kidney stones", a "Renal ultrasound" under the
category "Referral" and "Ambulatory referral to Neurology" are no nephrology referral: when in
doubt a duplicate is offered, since withholding a needed referral is the worse error.
Only an open request counts (active or on hold): a completed or revoked one does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from cds_service.engine.fhir_status import REFERRAL_OPEN
from cds_service.engine.terminology import codings_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cds_service.engine.model import Referral, Route
    from cds_service.engine.record import Record
    from cds_service.engine.shapes import Resource

NAME_LIMIT = 60  # characters of a request's name shown on a card


@dataclass(frozen=True)
class ReferralWords:
    """The patterns a locally coded request's words are read with, for one route."""

    specialty: re.Pattern[str]  # names the route's specialty or service
    kind: re.Pattern[str]  # says it is a referral
    elsewhere: re.Pattern[str] | None  # names another specialty (None: no other is known)


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
    requests = record.resources("ServiceRequest")
    if not requests:  # most charts: no request to read the words of
        return None
    words = words_for(referral, referral_words)
    for resource in requests:
        if _is_open(resource) and names_referral(resource, words):
            return resource
    return None


def referral_route(
    resource: Resource, routes: list[Route], referral_words: tuple[str, ...]
) -> Route | None:
    """The route whose referral a request is (a draft order, say), by code, else by words,
    as ``open_referral`` recognises one; None when it names no route's specialty."""
    codes = {(system, code) for system, code, _display in codings_of(resource.get("code"))}
    for route in routes:
        wanted = route.referral_set
        if wanted is not None and any(wanted.match(system, code) for system, code in codes):
            return route
    for route in routes:
        referral = route.referral
        if referral is not None and referral.words and referral_words:
            if names_referral(resource, words_for(referral, referral_words)):
                return route
    return None


def words_for(referral: Referral, referral_words: tuple[str, ...]) -> ReferralWords:
    """The route's specialty words, the words saying "referral", and every other specialty's."""
    return ReferralWords(
        words_pattern(referral.words),
        words_pattern(referral_words),
        words_pattern(referral.elsewhere) if referral.elsewhere else None,
    )


def names_referral(resource: Resource, words: ReferralWords) -> bool:
    """Its code's text or displays name the specialty; they or its category's say it is a
    referral (a request coded "Nephrology" under the category "Referral"); and neither names
    another specialty once the route's own words are set aside ("Urology referral - kidney
    stones", "Renal ultrasound" under "Referral": no)."""
    texts = list(_texts(resource.get("code")))
    read = texts + [t for c in _listed(resource.get("category")) for t in _texts(c)]
    if not any(words.specialty.search(t) for t in texts):
        return False
    if not any(words.kind.search(t) for t in read):
        return False
    elsewhere = words.elsewhere
    return elsewhere is None or not any(elsewhere.search(words.specialty.sub(" ", t)) for t in read)


def request_name(resource: Resource) -> str | None:
    """What the request is called (its code's text, else its first display), on one line and
    at most NAME_LIMIT characters, so a card can say which request it took for the referral."""
    name = next((" ".join(t.split()) for t in _texts(resource.get("code")) if t.strip()), None)
    if name is not None and len(name) > NAME_LIMIT:
        name = name[: NAME_LIMIT - 1].rstrip() + "…"
    return name


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
