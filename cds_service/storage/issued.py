"""Issued cards: queued on the hook's path, written in batches by the card writer.

``save_issued_cards`` never raises into the hook and never blocks it: if the database is down the
rows wait in the card writer's on-disk spool until it is back (card_writer.py). Writing a card
also adopts feedback that arrived before it (another instance's card, or a slow write).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cds_service.protocol.feedback import ANONYMOUS_CLIENT
from cds_service.storage.base import StoreBase
from cds_service.storage.card_batches import RecordsRefused
from cds_service.storage.card_rows import card_rows
from cds_service.storage.card_writer import CLOSE_TIMEOUT
from cds_service.storage.database import describe, feedback, insert_ignore, issued_card, utcnow
from cds_service.storage.suppressions import suppress

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split


class IssuedCards(StoreBase):
    def save_issued_cards(
        self,
        hook_instance: str,
        patient_id: str,
        cards: list[dict],
        rule_ids: list[str],
        fingerprints: list[str] | None = None,
        suppressed: list[dict] | None = None,
        issued_at: datetime | None = None,
        client: str = ANONYMOUS_CLIENT,
    ) -> None:
        """Queue the issued cards for writing (card uuid, route, rule id, hashed patient,
        fingerprint, the client they were issued to); ``suppressed`` cards (left out of the
        response) are written too, flagged, so the report can count them. ``issued_at``:
        when the cards were issued, if not now (kept by the starting store while the
        database opened)."""
        try:
            rows = card_rows(
                self,
                hook_instance,
                patient_id,
                cards,
                rule_ids,
                fingerprints,
                suppressed,
                issued_at or utcnow(),
                client,
            )
            if rows and self._closed:
                log.warning("store closed: %d issued-card records not written", len(rows))
                return
            if rows:
                self._after_fork()
                self._writer.put(rows)
        except Exception as exc:  # never break the hook
            log.warning("issued-card records not queued: %s", type(exc).__name__)

    def _write_cards(self, rows: list[dict]) -> bool:
        """Write the rows; False when the store is unavailable (the writer keeps them in
        its spool and tries again), ``RecordsRefused`` when the database refuses them."""
        if not self.ensure_schema():
            log.warning("could not write %d issued-card records: database unavailable", len(rows))
            return False
        try:
            with self.engine.begin() as conn:
                info = conn.connection.info
                insert_ignore(conn, issued_card, rows, ["card_uuid"])
                self._adopt_early_feedback(conn, rows)
        except SQLAlchemyError as exc:
            self._note_failure()
            log.warning("could not write %d issued-card records: %s", len(rows), describe(exc))
            if not isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
                # Not the database being away but these rows (a value too long, say): the
                # writer sets the bad ones apart rather than retry them for ever.
                raise RecordsRefused(describe(exc)) from None
            return False
        if not self._watch.same_file(info):
            self._file_lost()
            log.error(
                "%d issued-card records went to a database file that is no longer at "
                "its path: written again once the database is back",
                len(rows),
            )
            return False
        self._watch.maybe_checkpoint()
        return True

    def _adopt_early_feedback(self, conn: Connection, rows: list[dict]) -> None:
        """Within the card write's transaction: feedback that arrived before its card was
        written (another instance, or a write slower than the feedback's wait) is no longer
        unknown, and a suppressing override among it takes effect now, as it would have had
        the card been known: by the same rules (suppressions.suppress), so feedback from
        another client than the card's, or received too long after its issue, suppresses
        nothing."""
        uuids = [r["card_uuid"] for r in rows]
        early = [
            r._asdict()
            for r in conn.execute(
                select(
                    feedback.c.card_uuid,
                    feedback.c.outcome,
                    feedback.c.override_reason_system,
                    feedback.c.override_reason_code,
                    feedback.c.outcome_timestamp,
                    feedback.c.received_at,
                    feedback.c.client,
                ).where(feedback.c.card_uuid.in_(uuids), feedback.c.unknown_card.is_(True))
            )
        ]
        if not early:
            return
        conn.execute(
            update(feedback)
            .where(feedback.c.card_uuid.in_(uuids), feedback.c.unknown_card.is_(True))
            .values(unknown_card=False)
        )
        if self.suppression_policy:
            cards = {r["card_uuid"]: r for r in rows}
            suppress(conn, early, cards, self.suppression_terms())

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every record queued so far has been written (or given up on)."""
        return self._writer.flush(timeout)
