"""What a feedback batch must pass before anything of it is stored.

- Feedback on a card issued to another client is refused (403): a client may speak only
  for the cards it was shown. Cards recorded without a client (before revision 0005, or by
  an older release) are accepted; their feedback suppresses nothing (suppressions.py).
- Feedback on cards the store does not know (yet) is kept, since it may precede its card's
  record, but only so much: the rows for unknown cards received within the feedback window
  are capped per client and overall, and a batch that would pass a cap is refused (429 with
  ``Retry-After``), so nobody can fill the disk with invented card ids.
- One card takes at most ``FEEDBACK_PER_CARD`` feedback rows (the CDS Hooks sandbox sends two,
  and a retry's items, already stored, are not counted again): 429 beyond, without
  ``Retry-After`` since waiting does not help.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, text

from cds_service.config import Settings
from cds_service.errors import Forbidden, TooManyRequests
from cds_service.storage.database import feedback

# Any constant: only the same in every instance (the migration lock uses another).
_PG_UNKNOWN_LOCK_ID = 7_246_115_002
FEEDBACK_PER_CARD = 20  # distinct feedback rows (card, outcome, outcomeTimestamp) per card


def refuse_other_clients(rows: list[dict], cards: dict[str, dict], client: str) -> None:
    """Forbidden unless every known card of the batch was issued to ``client`` (or to no
    recorded client)."""
    for index, row in enumerate(rows):
        card = cards.get(row["card_uuid"])
        if card is not None and card["client"] is not None and card["client"] != client:
            raise Forbidden(
                "Feedback refused: a card in this batch was issued to another client.",
                diagnostics=f"feedback item {index}: card issued to another client",
            )


def not_yet_stored(conn: Connection, rows: list[dict]) -> list[dict]:
    """The rows not stored already; TooManyRequests when they would give a card more than
    FEEDBACK_PER_CARD rows."""
    stored = conn.execute(
        select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.outcome_timestamp).where(
            feedback.c.card_uuid.in_(sorted({row["card_uuid"] for row in rows}))
        )
    ).all()
    keys = {tuple(key) for key in stored}
    fresh = [r for r in rows if (r["card_uuid"], r["outcome"], r["outcome_timestamp"]) not in keys]
    per_card = Counter(key[0] for key in stored)
    per_card.update(row["card_uuid"] for row in fresh)
    for index, row in enumerate(rows):
        if per_card[row["card_uuid"]] > FEEDBACK_PER_CARD:
            raise TooManyRequests(
                f"Too much feedback for one card (at most {FEEDBACK_PER_CARD}).",
                diagnostics=f"feedback item {index}: its card has too much feedback",
            )
    return fresh


def check_unknown_cap(
    conn: Connection, unknown: int, client: str, received_at: datetime, settings: Settings
) -> None:
    """TooManyRequests when storing ``unknown`` more rows for unknown cards would pass the cap
    of ``client`` or the overall one (counting rows received within the feedback window).
    On PostgreSQL the count is taken under a transaction lock, so concurrent batches cannot
    both slip under a cap (SQLite transactions already hold the write lock)."""
    if unknown <= 0:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_UNKNOWN_LOCK_ID})
    window = timedelta(hours=settings.feedback_window_hours)
    recent = (feedback.c.unknown_card.is_(True), feedback.c.received_at > received_at - window)
    caps = (
        (settings.unknown_feedback_per_client, (*recent, feedback.c.client == client)),
        (settings.unknown_feedback_total, recent),
    )
    for cap, where in caps:
        count, oldest = conn.execute(
            select(func.count(), func.min(feedback.c.received_at)).where(*where)
        ).one()
        if count + unknown > cap:
            # The earliest a retry can pass: when the oldest row counted leaves the window.
            freed = (oldest + window) if oldest is not None else received_at + window
            wait = (freed - received_at).total_seconds()
            raise TooManyRequests(
                "Too much feedback for cards this service does not know; retry later.",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
