"""JWT replay protection: token ids remembered in the database until they expire, so every
worker and instance sharing it refuses a second use (unlike an in-process cache)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cds_service.storage.base import StoreBase
from cds_service.storage.database import StoreUnavailable, describe, jwt_replay, utcnow

REPLAY_PURGE_INTERVAL = 60.0  # seconds between deletions of expired JWT ids


class ReplayGuard(StoreBase):
    _last_replay_purge = 0.0

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Remember a token id until it expires; False if another call already used it.

        Shared by every worker and instance on the same database, unlike an in-process
        cache. Raises StoreUnavailable when the database cannot be reached.
        """
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        now = utcnow()
        until = datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None)
        if not self.ensure_schema():
            raise StoreUnavailable("schema not ready")
        purge = time.monotonic() - self._last_replay_purge > REPLAY_PURGE_INTERVAL
        try:
            with self.engine.begin() as conn:
                if purge:
                    conn.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now))
                    self._last_replay_purge = time.monotonic()
                try:
                    with conn.begin_nested():
                        conn.execute(insert(jwt_replay).values(token_key=key, expires_at=until))
                except IntegrityError:
                    # Used before: refused, unless that use has expired (not yet purged).
                    reused = conn.execute(
                        update(jwt_replay)
                        .where(jwt_replay.c.token_key == key)
                        .where(jwt_replay.c.expires_at < now)
                        .values(expires_at=until)
                    )
                    return reused.rowcount == 1
                return True
        except SQLAlchemyError as exc:
            raise StoreUnavailable(describe(exc)) from None
