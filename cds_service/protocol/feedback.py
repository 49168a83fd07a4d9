"""The feedback endpoint's logic: validate the items, then hand them to the store."""

from __future__ import annotations

from cds_service.errors import InvalidRequest
from cds_service.protocol import hooks


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
