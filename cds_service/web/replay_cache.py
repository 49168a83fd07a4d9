"""JWT replay protection: each (iss, jti) is accepted once until the token expires."""

from __future__ import annotations

import logging
import threading
import time

from cds_service import storage

log = logging.getLogger("cds_service.web.security")


class ReplayCache:
    """Each (iss, jti) is accepted once until the token expires; thread-safe, in-process.

    Behind several processes or instances a replay can reach another worker: see the
    README for the shared cache a multi-instance deployment needs.
    """

    PURGE_INTERVAL = 10.0

    def __init__(self):
        self._expiry: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._last_purge = 0.0

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Remember the jti; False if it was already seen and has not yet expired."""
        now = time.time()
        with self._lock:
            if now - self._last_purge >= self.PURGE_INTERVAL:
                self._expiry = {k: t for k, t in self._expiry.items() if t > now}
                self._last_purge = now
            seen_until = self._expiry.get((issuer, jti))
            if seen_until is not None and seen_until > now:
                return False
            self._expiry[(issuer, jti)] = expires_at
            return True

    def __len__(self) -> int:
        return len(self._expiry)


class SharedReplayCache:
    """Token ids remembered in the database, so every worker and instance refuses a replay.

    If the database is down, the in-process cache keeps protecting this worker (and the
    log says so) rather than refusing every client.
    """

    def __init__(self, store):
        self.store = store
        self.local = ReplayCache()

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        if not self.local.first_use(issuer, jti, expires_at):
            return False
        try:
            return self.store.first_use(issuer, jti, expires_at)
        except storage.StoreUnavailable:  # imported with the store (lazy)
            log.warning("shared JWT replay cache unavailable; this worker's cache is used")
            return True
