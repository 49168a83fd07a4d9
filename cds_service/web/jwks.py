"""The public keys CDS clients sign with: a local JWK Set file, and JWK Sets fetched from
allow-listed URLs (``CDS_TRUSTED_JKU``), cached and refetched at most every
``JWKS_REFETCH_MIN_INTERVAL`` seconds."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic

from cds_service.config import ConfigError
from cds_service.lazy import lazy_module

requests = lazy_module("requests")  # only when a JWK Set URL is trusted

log = logging.getLogger("cds_service.web.security")

# Least time between two fetches of one JWK Set (unknown kid, or a failed fetch), so a
# stream of tokens with made-up kids cannot make us hammer the client's key server.
JWKS_REFETCH_MIN_INTERVAL = 30.0
JWKS_MAX_BYTES = 256 * 1024
# JWK members that carry public key material or metadata; private parts are dropped.
_PUBLIC_JWK_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "key_ops")


def load_jwks_file(path: str) -> dict[str, dict]:
    """The keys of the local JWK Set file, by kid; a bad file stops the service at start."""
    try:
        jwks = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CDS_JWKS_FILE {path}: cannot read a JWK Set: {exc}") from None
    keys = usable_keys(jwks, path)
    if not keys:
        raise ConfigError(f"CDS_JWKS_FILE {path}: no usable EC or RSA signing key with a kid")
    return keys


def usable_keys(jwks: object, source: str) -> dict[str, dict]:
    """Public EC/RSA signing keys of a JWK Set, by kid; others are skipped with a log line."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        log.warning("JWK Set %s has no 'keys' array", source)
        return {}
    keys = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if (
            jwk.get("kty") not in {"EC", "RSA"}
            or jwk.get("use", "sig") != "sig"
            or "verify" not in jwk.get("key_ops", ["verify"])
            or not isinstance(kid, str)
            or not kid
        ):
            log.info(
                "JWK Set %s: skipping key %s (not an EC/RSA signing key with a kid)",
                source,
                shown(kid),
            )
            continue
        if "d" in jwk:
            log.warning(
                "JWK Set %s: key %s includes private key material; only its public "
                "part is used (publish public keys only)",
                source,
                shown(kid),
            )
        keys[kid] = {name: jwk[name] for name in _PUBLIC_JWK_MEMBERS if name in jwk}
    return keys


@dataclass
class _CachedJwkSet:
    keys: dict[str, dict] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch (monotonic)
    attempted_at: float | None = None  # last attempt, successful or not
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """JWK Sets fetched from allow-listed jku URLs, kept ``ttl`` seconds.

    An unknown kid triggers a refetch (the client rotated its keys), at most once per
    ``JWKS_REFETCH_MIN_INTERVAL``. If a refetch fails the keys already known stay in use.
    One lock per URL: concurrent requests wait for a single fetch instead of each fetching.
    """

    def __init__(self, ttl: float, timeout: float):
        self.ttl = ttl
        self.timeout = timeout
        self._sets: dict[str, _CachedJwkSet] = {}
        self._lock = threading.Lock()

    def key(self, url: str, kid: str) -> dict | None:
        with self._lock:
            cached = self._sets.setdefault(url, _CachedJwkSet())
        with cached.lock:
            now = monotonic()
            fresh = cached.fetched_at is not None and now - cached.fetched_at < self.ttl
            if fresh and kid in cached.keys:
                return cached.keys[kid]
            may_fetch = (
                cached.attempted_at is None
                or now - cached.attempted_at >= JWKS_REFETCH_MIN_INTERVAL
            )
            if may_fetch:
                cached.attempted_at = now
                keys = self._fetch(url)
                if keys is not None:
                    cached.keys, cached.fetched_at = keys, now
            return cached.keys.get(kid)

    def has_keys(self, url: str) -> bool:
        cached = self._sets.get(url)
        return bool(cached and cached.keys)

    def _fetch(self, url: str) -> dict[str, dict] | None:
        """The keys at ``url``; None (and a log line) if it cannot be had in time."""
        started = time.perf_counter()
        try:
            with requests.get(
                url,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status_code != 200:
                    log.warning("JWK Set %s: HTTP %s", url, response.status_code)
                    return None
                body = response.raw.read(JWKS_MAX_BYTES + 1, decode_content=True)
            if len(body) > JWKS_MAX_BYTES:
                log.warning("JWK Set %s is larger than %d bytes", url, JWKS_MAX_BYTES)
                return None
            keys = usable_keys(json.loads(body), url)
        except (requests.RequestException, ValueError) as exc:
            log.warning("JWK Set %s could not be fetched: %s", url, type(exc).__name__)
            return None
        log.info(
            "JWK Set %s fetched: %d key(s) in %.0f ms",
            url,
            len(keys),
            (time.perf_counter() - started) * 1000,
        )
        return keys


def shown(value: object) -> str:
    """A header or claim value as it may appear in a log line: quoted, short, one line."""
    return repr(value)[:100]
