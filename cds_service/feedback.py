"""The feedback endpoint's logic: validate the items, then hand them to the store."""

from __future__ import annotations

from cds_service import hooks


def validate(body: object) -> list[dict]:
    """The feedback items of a schema-valid body; raises a 400 CdsError otherwise."""
    hooks.check("feedback", body, "feedback")
    return body["feedback"]
