"""Authentication of CDS clients (CDS Hooks "Security"): JWT verification when enabled.

With ``CDS_AUTH_MODE=jwt`` every call to discovery, a service or feedback must carry
``Authorization: Bearer <JWT>`` signed by a client we trust. Trust is configured, never
taken from the token: the issuers (``CDS_TRUSTED_ISSUERS``), the public keys (a local JWK
Set file, ``CDS_JWKS_FILE``, and/or JWK Set URLs in ``CDS_TRUSTED_JKU``), and the
algorithms (asymmetric only, as the spec requires). Any failure is one 401 to the client;
the precise reason goes to the log (never the token) and to a metric.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from cds_service import metrics
from cds_service.config import ConfigError, Settings
from cds_service.errors import NotAuthenticated
from cds_service.lazy import lazy_module
from cds_service.web.jwks import JwksCache, load_jwks_file, shown
from cds_service.web.replay_cache import ReplayCache, SharedReplayCache

jwt = lazy_module("jwt")  # PyJWT + cryptography load on the first token (CDS_AUTH_MODE=jwt)

log = logging.getLogger(__name__)

# The only algorithms we verify, and the key each needs: (JWK kty, JWK crv or None).
# No "none", no HMAC: a token never gets to choose a shared-secret check.
KEY_TYPE_FOR_ALGORITHM = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}

# Label values of metrics.JWT_REJECTIONS: a small fixed set, so dashboards stay stable.
REASONS = frozenset(
    {
        "missing_token",  # no Authorization header, or not "Bearer <token>"
        "malformed",  # not a signed JWT we can parse, or a bad header field
        "bad_algorithm",  # alg not allowed, or the key does not fit the alg
        "untrusted_issuer",  # iss not in CDS_TRUSTED_ISSUERS
        "untrusted_jku",  # kid not in the JWKS file, and jku not in CDS_TRUSTED_JKU
        "unknown_key",  # no key with this kid (JWKS file, or the jku's JWK Set)
        "jwks_unavailable",  # the allow-listed JWK Set could not be fetched
        "bad_signature",
        "wrong_audience",  # aud is not the URL of the endpoint called
        "expired",
        "not_yet_valid",  # iat or nbf in the future (beyond the leeway)
        "lifetime_too_long",  # exp - iat above CDS_JWT_MAX_LIFETIME
        "missing_claim",  # iss, aud, exp, iat or jti absent
        "replay",  # jti already seen
    }
)

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


class Rejected(Exception):
    """Why a token is refused: ``reason`` is a metric label, ``detail`` goes to the log."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Authenticator:
    """Checks the CDS client's JWT on each call; built once at start-up from the settings."""

    def __init__(self, settings: Settings, replay_store=None):
        """``replay_store`` (the database Store) shares used token ids across processes."""
        self.settings = settings
        if settings.auth_mode == "off":
            log.warning("CDS_AUTH_MODE=off: CDS client JWTs are NOT verified (development only)")
            return
        _check_jwt_settings(settings)
        self.base_url = settings.public_base_url.rstrip("/")
        self.issuers = frozenset(settings.trusted_issuers)
        self.trusted_jku = frozenset(settings.trusted_jku)
        self.file_keys = load_jwks_file(settings.jwks_file) if settings.jwks_file else {}
        self.jwks = JwksCache(settings.jwks_cache_ttl, settings.jwks_fetch_timeout)
        self.seen = SharedReplayCache(replay_store) if replay_store is not None else ReplayCache()
        log.info(
            "CDS client JWTs required: %d trusted issuer(s), %d key(s) from %s, "
            "%d trusted jku URL(s)",
            len(self.issuers),
            len(self.file_keys),
            settings.jwks_file or "no JWKS file",
            len(self.trusted_jku),
        )

    def authenticate(self, authorization: str | None, endpoint_path: str) -> dict | None:
        """The verified claims; raises NotAuthenticated (401) unless a trusted client signed them.

        ``endpoint_path`` is the request path; the token's ``aud`` must be the public URL
        of that endpoint, so a token stolen from one service cannot be replayed at another.
        """
        if self.settings.auth_mode == "off":
            return None
        token = ""
        try:
            token = bearer_token(authorization)
            return self.verify(token, self.base_url + endpoint_path)
        except Rejected as failure:
            detail = failure.detail.replace(token, "[token]") if token else failure.detail
            log.warning(
                "CDS client JWT rejected on %s: %s (%s)", endpoint_path, failure.reason, detail
            )
            metrics.JWT_REJECTIONS.labels(failure.reason).inc()
            raise NotAuthenticated(
                "Authentication failed.",
                headers={"WWW-Authenticate": 'Bearer realm="cds-services"'},
            ) from None

    def verify(self, token: str, audience: str) -> dict:
        """Every check in order: cheap structural ones first, the replay cache last."""
        header = unverified_header(token)
        issuer = unverified_issuer(token)
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise Rejected("untrusted_issuer", f"iss {shown(issuer)} is not trusted")
        jwk = self.find_key(header)
        claims = decode(
            token,
            verification_key(jwk, header["alg"]),
            header["alg"],
            audience,
            self.issuers,
            self.settings.jwt_leeway,
        )
        check_lifetime(claims, self.settings.jwt_max_lifetime)
        if not self.seen.first_use(
            claims["iss"], claims["jti"], claims["exp"] + self.settings.jwt_leeway
        ):
            raise Rejected("replay", f"jti {shown(claims['jti'])} from {shown(issuer)} seen before")
        return claims

    def find_key(self, header: dict) -> dict:
        """The JWK for the token's kid: the local file first, then an allow-listed jku.

        Keys in the file were exchanged out of band, so they are trusted whatever jku the
        token names. A jku outside the allow-list is never fetched.
        """
        kid, jku = header["kid"], header.get("jku")
        if kid in self.file_keys:
            return self.file_keys[kid]
        if jku is None:
            raise Rejected("unknown_key", f"kid {shown(kid)} not in the JWKS file, and no jku")
        if jku not in self.trusted_jku:
            raise Rejected("untrusted_jku", f"jku {shown(jku)} is not in CDS_TRUSTED_JKU")
        jwk = self.jwks.key(jku, kid)
        if jwk is not None:
            return jwk
        if not self.jwks.has_keys(jku):
            raise Rejected("jwks_unavailable", f"JWK Set {shown(jku)} could not be fetched")
        raise Rejected("unknown_key", f"kid {shown(kid)} not in JWK Set {shown(jku)}")


def _check_jwt_settings(settings: Settings) -> None:
    """Refuse to start in jwt mode with settings that would reject, or wrongly accept, all."""
    base = urlsplit(settings.public_base_url)
    if (
        not settings.public_base_url
        or base.scheme not in {"http", "https"}
        or not base.netloc
        or base.query
        or base.fragment
    ):
        raise ConfigError(
            "CDS_AUTH_MODE=jwt needs CDS_PUBLIC_BASE_URL, the http(s) URL the "
            "EHR calls (the token's aud is checked against it)"
        )
    if not settings.trusted_issuers:
        raise ConfigError("CDS_AUTH_MODE=jwt needs CDS_TRUSTED_ISSUERS")
    if not settings.jwks_file and not settings.trusted_jku:
        raise ConfigError("CDS_AUTH_MODE=jwt needs CDS_JWKS_FILE and/or CDS_TRUSTED_JKU")
    if settings.jwt_max_lifetime <= 0 or settings.jwt_leeway < 0:
        raise ConfigError("CDS_JWT_MAX_LIFETIME must be positive and CDS_JWT_LEEWAY not negative")
    if settings.jwks_fetch_timeout <= 0 or settings.jwks_cache_ttl < 0:
        raise ConfigError(
            "CDS_JWKS_FETCH_TIMEOUT must be positive, CDS_JWKS_CACHE_TTL not negative"
        )
    for url in settings.trusted_jku:
        if urlsplit(url).scheme != "https":
            log.warning("CDS_TRUSTED_JKU %s is not https: acceptable for local testing only", url)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Rejected("missing_token", "no Authorization: Bearer header")
    if token.count(".") != 2 or " " in token:
        raise Rejected("malformed", "not a compact signed JWT")
    return token


def unverified_header(token: str) -> dict:
    """The JOSE header, checked before any key is looked up or fetched."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise Rejected("malformed", f"unreadable header: {exc}") from None
    alg = header.get("alg")
    if alg not in KEY_TYPE_FOR_ALGORITHM:
        raise Rejected("bad_algorithm", f"alg {shown(alg)} is not allowed")
    if str(header.get("typ", "JWT")).upper() != "JWT":
        raise Rejected("malformed", f"typ {shown(header.get('typ'))} is not JWT")
    if "crit" in header:
        raise Rejected("malformed", "crit header extensions are not supported")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise Rejected("malformed", "kid header missing")
    if "jku" in header and not isinstance(header["jku"], str):
        raise Rejected("malformed", "jku header is not a string")
    return header


def unverified_issuer(token: str) -> object:
    """The iss claim before verification: untrusted issuers must not trigger key fetches."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise Rejected("malformed", f"unreadable payload: {exc}") from None
    return claims.get("iss")


def verification_key(jwk: dict, alg: str):
    """The public key, only if its JWK type (and curve) is the one ``alg`` needs.

    The key type comes from our JWK, never from the token: an RSA key is never used for
    an HMAC check, and an EC key only with its own curve.
    """
    kty, crv = KEY_TYPE_FOR_ALGORITHM[alg]
    if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv):
        raise Rejected("bad_algorithm", f"alg {alg} does not fit key {shown(jwk.get('kid'))}")
    if jwk.get("alg") not in (None, alg):
        raise Rejected("bad_algorithm", f"key {shown(jwk.get('kid'))} is for {shown(jwk['alg'])}")
    try:
        return jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
        raise Rejected("unknown_key", f"key {shown(jwk.get('kid'))} unusable: {exc}") from None


def decode(token: str, key, alg: str, audience: str, issuers: frozenset[str], leeway: int) -> dict:
    """Signature and registered claims, with PyJWT; its errors mapped to our reasons."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=issuers,
            leeway=leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise Rejected("missing_claim", str(exc)) from None
    except jwt.InvalidSignatureError:
        raise Rejected("bad_signature", "signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise Rejected("expired", "token expired") from None
    except jwt.ImmatureSignatureError as exc:
        raise Rejected("not_yet_valid", str(exc)) from None
    except jwt.InvalidAudienceError:
        raise Rejected("wrong_audience", f"aud is not {audience}") from None
    except jwt.InvalidIssuerError:
        raise Rejected("untrusted_issuer", "iss is not trusted") from None
    except jwt.InvalidTokenError as exc:
        raise Rejected("malformed", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise Rejected("missing_claim", "jti is empty")
    for name in ("exp", "iat", "nbf"):
        if name in claims and (
            isinstance(claims[name], bool) or not isinstance(claims[name], (int, float))
        ):
            raise Rejected("malformed", f"{name} is not a number")
    return claims


def check_lifetime(claims: dict, max_lifetime: int) -> None:
    """Short-lived tokens only (the spec's clients use 5 minutes): limits a leak's use."""
    lifetime = claims["exp"] - claims["iat"]
    if lifetime > max_lifetime:
        raise Rejected("lifetime_too_long", f"exp - iat = {lifetime}s > {max_lifetime}s")
