"""Suppressions: a card overridden with a reason its route's ``suppression`` block names is
left out for that patient for a while (unless its evidence changes or its indicator rises).

``suppress`` records them inside the transaction that stores the feedback (or adopts it when
the card is written late); ``active_suppressions`` reads them on the hook's path: one
indexed query, and if the database cannot be read nothing is suppressed (fail open, logged).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from cds_service.storage.base import StoreBase
from cds_service.storage.database import READ_ONLY, StoreUnavailable, describe, suppression

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split

SUPPRESSION_RETRY = 30.0  # after a failed suppression lookup, seconds without lookups (fail open)
URGENT_MAX_DAYS = 1  # a critical card is never suppressed for longer, whatever the policy


class Suppressions(StoreBase):
    _lookup_paused_until = 0.0

    def active_suppressions(self, patient_id: str, routes: list[str]) -> dict[str, dict]:
        """Route -> {"fingerprint", "indicator"} of the suppressions holding now for this
        patient and these routes: one query on the primary key. Empty (cards are shown)
        when the database cannot be read; then lookups pause for SUPPRESSION_RETRY seconds
        so an outage does not slow every hook call."""
        wanted = sorted({r for r in routes if r in self.suppression_policy})
        if not wanted or self._closed:
            return {}
        if time.monotonic() < self._lookup_paused_until:
            return {}
        try:
            if not self._schema_ready and not self.ensure_schema():
                raise StoreUnavailable("schema not ready")
            key = self.patient_hash(str(patient_id))
            self._after_fork()
            with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                found = conn.execute(
                    select(
                        suppression.c.route, suppression.c.fingerprint, suppression.c.indicator
                    ).where(
                        suppression.c.patient_hash == key,
                        suppression.c.route.in_(wanted),
                        suppression.c.expires_at > self.clock(),
                    )
                ).all()
        except (SQLAlchemyError, StoreUnavailable, OSError, ValueError) as exc:
            self._lookup_paused_until = time.monotonic() + SUPPRESSION_RETRY
            log.warning(
                "suppressions not read (cards shown unsuppressed for %.0f s): %s",
                SUPPRESSION_RETRY,
                describe(exc) if isinstance(exc, SQLAlchemyError) else type(exc).__name__,
            )
            return {}
        return {
            route: {"fingerprint": fp, "indicator": indicator} for route, fp, indicator in found
        }


def suppress(
    conn: Connection,
    rows: list[dict],
    cards: dict[str, dict],
    received_at: datetime,
    policy: dict[str, dict[str, int]],
    urgent_routes: set[str],
) -> None:
    """Within the feedback's transaction: an override with a suppressing reason starts (or
    renews) a suppression; a later acceptance of that card ends it. ``cards``: the issued
    cards of the feedback ``rows`` by uuid (those unknown are skipped)."""
    for row in sorted(rows, key=lambda r: r["outcome_timestamp"]):
        card = cards.get(row["card_uuid"])
        if card is None:
            continue
        if row["outcome"] == "accepted":
            conn.execute(
                delete(suppression).where(
                    suppression.c.card_uuid == row["card_uuid"],
                    suppression.c.suppressed_at <= row["outcome_timestamp"],
                )
            )
            continue
        if row["outcome"] != "overridden":
            continue
        days = policy.get(card["route"], {}).get(row["override_reason_code"] or "")
        if not days:
            continue
        if card["route"] in urgent_routes or card["indicator"] == "critical":
            days = min(days, URGENT_MAX_DAYS)
        # A client clock ahead: from the receipt (of this item, when adopted late).
        start = min(row["outcome_timestamp"], row.get("received_at") or received_at)
        values = {
            "card_uuid": row["card_uuid"],
            "reason_code": row["override_reason_code"],
            "fingerprint": card["fingerprint"],
            "indicator": card["indicator"],
            "suppressed_at": row["outcome_timestamp"],
            "expires_at": start + timedelta(days=days),
        }
        _upsert(conn, {"patient_hash": card["patient_hash"], "route": card["route"]}, values)


def _upsert(conn: Connection, key: dict, values: dict) -> None:
    """The suppression of (patient, route) ``key``, unless a later override holds one."""
    name = conn.dialect.name
    if name in {"postgresql", "sqlite"}:
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        statement = dialect_insert(suppression).values(**key, **values)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=list(key),
                set_=values,
                # Only a later override replaces one (feedback can be adopted late).
                where=suppression.c.suppressed_at <= statement.excluded.suppressed_at,
            )
        )
    else:
        conn.execute(
            delete(suppression).where(
                suppression.c.patient_hash == key["patient_hash"],
                suppression.c.route == key["route"],
            )
        )
        conn.execute(insert(suppression).values(**key, **values))
