"""Clinician feedback: a batch of validated items stored in one transaction.

Items already stored (same card, outcome and outcomeTimestamp) are ignored; a comment is
kept to its first ``COMMENT_KEPT`` characters. A database
failure raises ``StoreUnavailable`` so the app answers 503 and the EHR retries. Feedback for
a card not recorded yet is stored as for an unknown card (within a cap); the card's write
adopts it. Each item keeps the client that sent it; a batch about another client's card is
refused whole (feedback_checks.py). ``outcomeTimestamp`` is stored no later than the
receipt: a client clock ahead (or a timestamp in 2099) cannot outrank later feedback.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from cds_service.protocol.feedback import ANONYMOUS_CLIENT
from cds_service.storage.base import StoreBase
from cds_service.storage.database import (
    FEEDBACK_KEY,
    StoreUnavailable,
    describe,
    feedback,
    insert_ignore,
    issued_card,
    parse_timestamp,
)
from cds_service.storage.feedback_checks import (
    check_caps,
    not_yet_stored,
    refuse_other_clients,
)
from cds_service.storage.suppressions import suppress

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split
COMMENT_KEPT = 500  # characters of a userComment stored (the rest is dropped: disk bound)


def feedback_rows(items: list[dict], received_at: datetime, client: str) -> list[dict]:
    """The feedback rows of the items, one per (card, outcome, outcomeTimestamp), each
    outcomeTimestamp clamped to the receipt time."""
    rows: dict[tuple, dict] = {}
    for item in items:
        claimed = parse_timestamp(item["outcomeTimestamp"])  # checked by protocol/feedback.py
        outcome_timestamp = min(claimed, received_at)
        override = item.get("overrideReason") or {}
        reason = override.get("reason") or {}
        accepted = [s["id"] for s in item.get("acceptedSuggestions") or []]
        row = {
            "card_uuid": item["card"],
            "outcome": item["outcome"],
            "accepted_suggestions": accepted or None,
            "override_reason_system": reason.get("system"),
            "override_reason_code": reason.get("code"),
            "user_comment": _kept_comment(override.get("userComment")),
            "outcome_timestamp": outcome_timestamp,
            "received_at": received_at,
            "client": client,
        }
        rows.setdefault((row["card_uuid"], row["outcome"], outcome_timestamp), row)
    return list(rows.values())


def _kept_comment(comment: str | None) -> str | None:
    return comment[:COMMENT_KEPT] if comment else comment


def _issued_cards(conn: Connection, uuids: list[str]) -> dict[str, dict]:
    """The recorded cards among ``uuids``, by uuid (what a suppression needs of them)."""
    return {
        r.card_uuid: r._asdict()
        for r in conn.execute(
            select(
                issued_card.c.card_uuid,
                issued_card.c.route,
                issued_card.c.patient_hash,
                issued_card.c.fingerprint,
                issued_card.c.indicator,
                issued_card.c.issued_at,
                issued_card.c.client,
            ).where(issued_card.c.card_uuid.in_(uuids))
        )
    }


class FeedbackStore(StoreBase):
    def save_feedback(self, items: list[dict], client: str = ANONYMOUS_CLIENT) -> None:
        """Store a batch of validated feedback items from ``client`` in one transaction.

        Raises Forbidden (a card of another client), TooManyRequests (a card's, the
        client's or the unknown-card caps: feedback_checks.py) or StoreUnavailable; then
        nothing of the batch is stored."""
        received_at = self.clock()
        rows = feedback_rows(items, received_at, client)
        if not rows:
            return
        if not self.ensure_schema():
            raise StoreUnavailable("database unavailable")
        # The record of a card issued a moment ago may still wait in a card spool (the
        # writer batches in the background): any process's on this host is written now, so
        # the override applies on the very next call. A card of another host's instance
        # is adopted with the feedback when its record is written (issued.py).
        self._writer.write_now({row["card_uuid"] for row in rows})
        try:
            with self.engine.begin() as conn:
                info = conn.connection.info
                known = _issued_cards(conn, sorted({row["card_uuid"] for row in rows}))
                refuse_other_clients(rows, known, client)
                for row in rows:
                    row["unknown_card"] = row["card_uuid"] not in known
                fresh = not_yet_stored(conn, rows)  # a retry's items count once
                check_caps(conn, fresh, client, received_at, self.settings)
                insert_ignore(conn, feedback, rows, FEEDBACK_KEY)
                if self.suppression_policy:
                    suppress(conn, rows, known, self.suppression_terms())
        except SQLAlchemyError as exc:
            self._note_failure()
            log.warning("feedback batch of %d items not stored: %s", len(rows), describe(exc))
            raise StoreUnavailable("database unavailable") from None
        if not self._watch.same_file(info):  # committed into a deleted or replaced file
            self._file_lost()
            log.error(
                "feedback batch of %d items not stored: the database file is no longer "
                "at its path (data directory removed or file replaced)",
                len(rows),
            )
            raise StoreUnavailable("database file missing")
        self._watch.maybe_checkpoint()
