"""What a feedback batch must pass before anything of it is stored.

- Feedback on a card issued to another client is refused (403): a client may speak only
  for the cards it was shown. Cards recorded without a client (before revision 0005, or by
  an older release) are accepted; their feedback suppresses nothing (suppressions.py).
- One card takes at most ``FEEDBACK_PER_CARD`` feedback rows (the CDS Hooks sandbox sends two,
  and a retry's items, already stored, are not counted again): 429 beyond, without
  ``Retry-After`` since waiting does not help.
- Each client's feedback rows received within the feedback window, on any card, are capped
  (``CDS_FEEDBACK_PER_CLIENT``; without authentication every caller is the one client
  "anonymous", with the much smaller ``CDS_FEEDBACK_WITHOUT_AUTH``), so no client fills the
  disk through cards it was shown, however many hook calls it makes.
- Feedback on cards the store does not know (yet) is kept, since it may precede its card's
  record, but only so much: the rows for unknown cards received within the feedback window
  are capped per client and overall, so nobody can fill the disk with invented card ids.

A batch that would pass a windowed cap is refused whole (429 with ``Retry-After``: when the
oldest row counted leaves the window).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, text

from cds_service.config import Settings
from cds_service.errors import Forbidden, TooManyRequests
from cds_service.protocol.feedback import ANONYMOUS_CLIENT
from cds_service.storage.database import feedback

# Any constants: only the same in every instance (the migration lock uses another).
_PG_UNKNOWN_LOCK_ID = 7_246_115_002
_PG_CLIENT_LOCK_SEED = 7_246_115_003  # hashed with the client: one lock per client
FEEDBACK_PER_CARD = 10  # distinct feedback rows (card, outcome, outcomeTimestamp) per card


def client_allowance(client: str, settings: Settings) -> int:
    """The feedback rows ``client`` may send within the feedback window."""
    if client == ANONYMOUS_CLIENT:
        return min(settings.feedback_without_auth, settings.feedback_per_client)
    return settings.feedback_per_client


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


def check_caps(
    conn: Connection, fresh: list[dict], client: str, received_at: datetime, settings: Settings
) -> None:
    """TooManyRequests when storing the ``fresh`` rows would pass the client's allowance,
    or (for those about unknown cards) the client's or the overall cap on unknown-card
    feedback, counting the rows received within the feedback window. On PostgreSQL the
    counts are taken under transaction locks (the client's, then the unknown-card one), so
    concurrent batches cannot both slip under a cap (SQLite transactions already hold the
    write lock)."""
    if not fresh:
        return
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:client, :seed))"),
            {"client": client, "seed": _PG_CLIENT_LOCK_SEED},
        )
    window = timedelta(hours=settings.feedback_window_hours)
    recent = feedback.c.received_at > received_at - window
    mine = (recent, feedback.c.client == client)
    _check(conn, client_allowance(client, settings), len(fresh), mine, received_at, window)
    unknown = sum(row["unknown_card"] for row in fresh)
    if unknown <= 0:
        return
    if postgres:
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_UNKNOWN_LOCK_ID})
    of_unknown = feedback.c.unknown_card.is_(True)
    caps = (
        (settings.unknown_feedback_per_client, (*mine, of_unknown)),
        (settings.unknown_feedback_total, (recent, of_unknown)),
    )
    for cap, where in caps:
        _check(
            conn, cap, unknown, where, received_at, window, "for cards this service does not know"
        )


def _check(
    conn: Connection,
    cap: int,
    adding: int,
    where: tuple[Any, ...],
    received_at: datetime,
    window: timedelta,
    what: str = "from this client",
) -> None:
    count, oldest = conn.execute(
        select(func.count(), func.min(feedback.c.received_at)).where(*where)
    ).one()
    if count + adding > cap:
        # The earliest a retry can pass: when the oldest row counted leaves the window.
        freed = (oldest + window) if oldest is not None else received_at + window
        wait = (freed - received_at).total_seconds()
        raise TooManyRequests(
            f"Too much feedback {what}; retry later.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
