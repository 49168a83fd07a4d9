"""The feedback endpoint's logic: validate the items, name the client, hand both to the store."""

from __future__ import annotations

import hashlib

from cds_service.errors import InvalidRequest
from cds_service.protocol import hooks

# The client of every call when CDS_AUTH_MODE=off: nobody is verified, so all callers are one.
ANONYMOUS_CLIENT = "anonymous"
CLIENT_MAX_LENGTH = 255  # the width of the ``client`` columns (storage/database.py)


def client_of(claims: dict | None) -> str:
    """Who a call came from, as cards and feedback record it: the verified JWT's ``iss``, or
    ``anonymous`` without authentication. An issuer longer than the column is kept as its
    SHA-256 (still one value per issuer, so matching a card to its client still works)."""
    if not claims:
        return ANONYMOUS_CLIENT
    issuer = str(claims["iss"])
    if len(issuer) <= CLIENT_MAX_LENGTH:
        return issuer
    return "sha256:" + hashlib.sha256(issuer.encode()).hexdigest()


def validate(body: object) -> list[dict]:
    """The feedback items of a valid body; raises an InvalidRequest (400) naming the bad field.

    The schema checks the shape of ``outcomeTimestamp``; here it must also be a real
    instant (no month 13), so a whole batch is refused before anything is stored.
    """
    from cds_service.storage import parse_timestamp  # with SQLAlchemy: not at start-up

    hooks.check("feedback", body, "feedback")
    items = body["feedback"]
    for index, item in enumerate(items):
        try:
            parse_timestamp(item["outcomeTimestamp"])
        except (ValueError, OverflowError):
            raise InvalidRequest(
                f"Invalid feedback: $.feedback[{index}].outcomeTimestamp is not a valid date-time",
            ) from None
    return items
