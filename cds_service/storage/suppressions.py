"""Suppressions: a card overridden with a reason its route's ``suppression`` block names is
left out for that patient for a while (unless its evidence changes or its indicator rises).

``suppress`` records them inside the transaction that stores the feedback (or adopts it when
the card is written late); ``active_suppressions`` reads them on the hook's path: one
indexed query, and if the database cannot be read nothing is suppressed (fail open, logged).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, delete, select
from sqlalchemy.exc import SQLAlchemyError

from cds_service.config import Settings
from cds_service.engine.model import URGENT_MAX_DAYS
from cds_service.storage.base import StoreBase, SuppressionTerms
from cds_service.storage.database import (
    GENERATION_ROW,
    READ_ONLY,
    SUPPRESSION_KEY,
    StoreUnavailable,
    describe,
    suppression,
)

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split

SUPPRESSION_RETRY = 30.0  # after a failed suppression lookup, seconds without lookups (fail open)
CACHED_PATIENTS = 10_000  # patients whose suppressions a process keeps (then starts afresh)
COPY_MAX_AGE = 60.0  # seconds a patient's copy is used even while the token stays (backstop)
_SUPPRESSIONS_OF_PATIENT = select(
    suppression.c.route,
    suppression.c.fingerprint,
    suppression.c.indicator,
    suppression.c.expires_at,
    suppression.c.client,
).where(suppression.c.patient_hash == bindparam("key"))
# A client's own: the primary key's first two columns (patient, client).
_SUPPRESSIONS_OF_PATIENT_AND_CLIENT = _SUPPRESSIONS_OF_PATIENT.where(
    suppression.c.client == bindparam("client")
)
# Plain SQL on the DB-API connection: the statement machinery would cost 50x the read.
_TOKEN_SQL = f"SELECT token FROM suppression_generation WHERE id = {GENERATION_ROW}"


class Suppressions(StoreBase):
    """The suppressions holding now, answered from this process's copy of the table.

    The copy is read patient by patient and used only while the change token of
    ``suppression_generation`` stays: triggers on ``suppression`` (revision 0004) write a new
    token in every transaction that changes a row, by this service in any process or
    instance, by an older release during a rolling upgrade, or by hand. Each lookup reads
    the token (one primary-key row on a connection kept for it, ~2 us on SQLite) before
    trusting the copy, which is also never older than COPY_MAX_AGE. Expiry is compared on
    every lookup, so the copy never outlives a suppression."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self._lookup_paused_until = 0.0
        # (patient hash, client or None for all) -> (change token, monotonic time read,
        # the suppression rows of that patient made by that client)
        self._copy: dict[tuple[str, str | None], tuple[str, float, tuple[Row, ...]]] = {}
        self._token_lock = threading.Lock()
        self._token_connection: tuple[int, Any] | None = None  # (pid, pooled connection)
        self._inherited: list[tuple[int, Any]] = []  # a parent's, kept open (see below)

    def active_suppressions(
        self, patient_id: str, routes: list[str], client: str | None = None
    ) -> dict[str, dict]:
        """Route -> {"fingerprint", "indicator"} of the suppressions holding now for this
        patient and these routes, made by ``client``'s overrides (None: any client's, for
        the command line). Empty (cards are shown) when the database cannot be read;
        then lookups pause for SUPPRESSION_RETRY seconds so an outage does not slow every
        hook call."""
        wanted = {r for r in routes if r in self.suppression_policy}
        if not wanted or self._closed:
            return {}
        if time.monotonic() < self._lookup_paused_until:
            return {}
        try:
            if not self._schema_ready and not self.ensure_schema():
                raise StoreUnavailable("schema not ready")
            self._after_fork()
            rows = self._suppressions_of((self.patient_hash(str(patient_id)), client))
        except (SQLAlchemyError, StoreUnavailable, OSError, ValueError) as exc:
            self._drop_copy()
            self._lookup_paused_until = time.monotonic() + SUPPRESSION_RETRY
            log.warning(
                "suppressions not read (cards shown unsuppressed for %.0f s): %s",
                SUPPRESSION_RETRY,
                describe(exc) if isinstance(exc, SQLAlchemyError) else type(exc).__name__,
            )
            return {}
        now = self.clock()
        return {
            route: {"fingerprint": fp, "indicator": indicator}
            for route, fp, indicator, expires_at, owner in rows
            if route in wanted and expires_at > now and (client is None or owner == client)
        }

    def _suppressions_of(self, key: tuple[str, str | None]) -> tuple[Row, ...]:
        """Every suppression row of (patient, client) ``key`` (client None: of any client;
        expired ones too), from the copy when it
        was read under the token read now, less than COPY_MAX_AGE ago. Each entry keeps its
        own token, and rows are queried after the token, so an entry is never older than
        the token it is kept under, whatever the threads interleave."""
        token = self._change_token()
        if token is None:  # no token row to compare with: never trust a copy
            return self._query_suppressions(key)
        now = time.monotonic()
        entry = self._copy.get(key)
        if entry is not None and entry[0] == token and now - entry[1] < COPY_MAX_AGE:
            return entry[2]
        rows = self._query_suppressions(key)
        if len(self._copy) >= CACHED_PATIENTS:
            self._copy.clear()
        self._copy[key] = (token, now, rows)
        return rows

    def _query_suppressions(self, key: tuple[str, str | None]) -> tuple[Row, ...]:
        patient, client = key
        if client is None:
            statement, values = _SUPPRESSIONS_OF_PATIENT, {"key": patient}
        else:
            statement = _SUPPRESSIONS_OF_PATIENT_AND_CLIENT
            values = {"key": patient, "client": client}
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            rows = tuple(conn.execute(statement, values).all())
            info = conn.connection.info
        if not self._watch.same_file(info):  # an unlinked file's rows: never kept or used
            self._file_lost()
            raise StoreUnavailable("database file is no longer at its path")
        return rows

    def _change_token(self) -> str | None:
        """The current token, read on a pooled connection kept for this. A kept connection
        is never pre-pinged, so one that fails (a PostgreSQL restart, an idle connection
        cut) is replaced and the read tried once more before the lookup fails open."""
        with self._token_lock:
            try:
                return self._read_token()
            except Exception:  # the DB-API's own errors: not SQLAlchemy's
                self._forget_token_connection()
            try:
                return self._read_token()
            except Exception as exc:
                self._forget_token_connection()
                raise StoreUnavailable(f"change token not read ({type(exc).__name__})") from None

    def _read_token(self) -> str | None:
        held = self._token_connection
        if held is not None and (held[0] != os.getpid() or not self._watch.same_file(held[1].info)):
            self._forget_token_connection()  # a forked child, or the file was replaced
            held = None
        if held is None:
            held = self._token_connection = (os.getpid(), self.engine.raw_connection())
        connection = held[1]
        cursor = connection.cursor()
        try:
            cursor.execute(_TOKEN_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
        connection.rollback()  # no transaction left open (PostgreSQL)
        return row[0] if row else None

    def release_token_connection(self) -> None:
        """At close: the connection kept for the change token goes back (invalidated)."""
        with self._token_lock:
            self._forget_token_connection()
        self._drop_copy()

    def _forget_token_connection(self) -> None:
        held, self._token_connection = self._token_connection, None
        if held is None:
            return
        if held[0] != os.getpid():  # the parent's: closing it here would close theirs
            self._inherited.append(held)
            return
        try:
            held[1].invalidate()
        except Exception:  # already broken: nothing more to release
            pass

    def _drop_copy(self) -> None:
        self._copy.clear()


def suppress(
    conn: Connection, rows: list[dict], cards: dict[str, dict], terms: SuppressionTerms
) -> None:
    """Within the feedback's transaction: an override with a suppressing reason starts a
    suppression; a later acceptance of that card ends it. ``cards``: the issued cards of the
    feedback ``rows`` by uuid (those unknown are skipped). Every change moves the change
    token in the same transaction (the table's triggers, revision 0004).

    Only feedback from the client the card was issued to counts, and an override only when
    received within ``terms.window`` of the card's issue, with a reason (system and code)
    the route's policy names. The suppression ends at the card's issue + the policy's days
    (at most a day for a critical card): a later or repeated override of the same card
    never extends it, only a new card does. Times are taken between the card's issue and
    the feedback's receipt, so a client clock ahead (or behind) moves nothing."""
    for row in sorted(rows, key=lambda r: r["outcome_timestamp"]):
        card = cards.get(row["card_uuid"])
        if card is None or card["client"] is None or card["client"] != row["client"]:
            continue
        issued_at, received_at = card["issued_at"], row["received_at"]
        when = min(max(row["outcome_timestamp"], issued_at), received_at)
        if row["outcome"] == "accepted":
            conn.execute(
                delete(suppression).where(
                    suppression.c.card_uuid == row["card_uuid"], suppression.c.suppressed_at <= when
                )
            )
            continue
        if row["outcome"] != "overridden" or received_at - issued_at > terms.window:
            continue
        reason = (row["override_reason_system"] or "", row["override_reason_code"] or "")
        days = terms.policy.get(card["route"], {}).get(reason)
        if not days:
            continue
        if card["route"] in terms.urgent_routes or card["indicator"] == "critical":
            days = min(days, URGENT_MAX_DAYS)
        values = {
            "card_uuid": row["card_uuid"],
            "reason_code": row["override_reason_code"],
            "fingerprint": card["fingerprint"],
            "indicator": card["indicator"],
            "suppressed_at": when,
            "expires_at": issued_at + timedelta(days=days),
        }
        _upsert(conn, {name: card[name] for name in SUPPRESSION_KEY}, values)


def _upsert(conn: Connection, key: dict, values: dict) -> None:
    """The suppression of (patient, client, route) ``key``, unless a later override of that
    client holds one (another client's suppression is another row, never touched); for
    the same card the earlier expiry is kept (a new override of it never extends it).
    ``ON CONFLICT`` on both backends the store supports (config.DATABASE_SCHEMES)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    statement = dialect_insert(suppression).values(**key, **values)
    new = statement.excluded
    same_card_earlier = and_(
        suppression.c.card_uuid == new.card_uuid, suppression.c.expires_at < new.expires_at
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=list(key),
            set_={
                **values,
                "expires_at": case(
                    (same_card_earlier, suppression.c.expires_at), else_=new.expires_at
                ),
            },
            # Only a later override replaces one (feedback can be adopted late).
            where=suppression.c.suppressed_at <= new.suppressed_at,
        )
    )
