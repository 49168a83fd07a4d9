"""JWT verification of CDS clients (issue 5), through the HTTP endpoints the EHR calls."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from werkzeug import Response

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jwt_helpers import Signer, jwks, unsigned_token  # noqa: E402

from cds_service.config import ConfigError, Settings  # noqa: E402
from cds_service.web import jwks as web_jwks
from cds_service.web import security  # noqa: E402
from cds_service.web.app import create_app  # noqa: E402
from cds_service.web.security import ReplayCache  # noqa: E402

BASE = "https://cds.example.org/base"
ISS = "https://ehr.example.org"
ORIGIN = "https://ehr.example.org"
DISCOVERY = "/cds-services"
SERVICE = "/cds-services/leg-cramp-referral"
FEEDBACK = "/cds-services/leg-cramp-referral/feedback"
PREFETCH_KEYS = ("conditions", "observations", "procedures", "medications", "servicerequests")

# Every Authorization header sent in a test; none may show up in the log.
SENT: list[str] = []


class NullStore:
    """The tests are about authentication, not storage."""

    def save_issued_cards(self, *args, **kwargs):
        pass

    def save_feedback(self, items, client=None):
        pass

    def first_use(self, issuer, jti, expires_at):
        return True  # the in-process replay cache still applies

    def close(self):
        pass


def hook_request() -> dict:
    prefetch = {key: {"resourceType": "Bundle", "type": "searchset"} for key in PREFETCH_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": "p1"}
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": prefetch,
    }


def feedback_body() -> dict:
    return {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-01-02T03:04:05Z",
            }
        ]
    }


ENDPOINTS = {
    DISCOVERY: ("GET", None),
    SERVICE: ("POST", hook_request),
    FEEDBACK: ("POST", feedback_body),
}


def call(client, path: str = SERVICE, token: str | None = None, authorization: str | None = None):
    method, body = ENDPOINTS[path]
    headers = {"Origin": ORIGIN}
    if token is not None:
        authorization = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
        SENT.append(authorization)
    return client.open(path, method=method, json=body() if body else None, headers=headers)


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("cds_jwt_rejections_total", {"reason": reason}) or 0.0


def assert_rejected(response, reason: str | None = None, before: float | None = None):
    """A 401 the way every client must see it: OperationOutcome, challenge, CORS."""
    assert response.status_code == 401
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"
    assert body["issue"][0]["details"]["text"] == "Authentication failed."
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cds-services"'
    assert response.headers.get("Access-Control-Allow-Origin") in {"*", ORIGIN}
    if reason is not None:
        assert rejections(reason) == before + 1


@pytest.fixture(autouse=True)
def token_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    SENT.clear()
    yield
    text = caplog.text
    for authorization in SENT:
        token = authorization.split(" ", 1)[-1]
        if len(token) > 8:
            assert token not in text


@pytest.fixture(scope="module")
def es384():
    return Signer.es384()


@pytest.fixture(scope="module")
def rs384():
    return Signer.rs384()


@pytest.fixture
def make_client(tmp_path, es384, rs384):
    """A test client of the app in jwt mode; by default trusting both keys from a file."""

    def make(keys=None, **overrides):
        jwks_file = tmp_path / "jwks.json"
        jwks_file.write_text(json.dumps(jwks(*(keys if keys is not None else (es384, rs384)))))
        options = {
            "auth_mode": "jwt",
            "jwks_file": str(jwks_file),
            "trusted_issuers": (ISS,),
            "public_base_url": BASE,
            "data_dir": tmp_path,
            **overrides,
        }
        settings = Settings.from_env({}, **options)
        return create_app(settings, store=NullStore()).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock of the JWK Set cache, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(web_jwks, "monotonic", lambda: now[0])
    return now


# --- accepted tokens ------------------------------------------------------------------


@pytest.mark.parametrize("path", [DISCOVERY, SERVICE, FEEDBACK])
@pytest.mark.parametrize("signer_name", ["es384", "rs384"])
def test_valid_token_accepted_on_every_endpoint(client, request, signer_name, path):
    signer = request.getfixturevalue(signer_name)
    response = call(client, path, signer.token(BASE + path, ISS))
    assert response.status_code == 200
    if path == SERVICE:
        assert response.get_json() == {"cards": []}


def test_aud_as_array_containing_the_endpoint_url(client, es384):
    token = es384.token(["https://other.example.org", BASE + SERVICE], ISS)
    assert call(client, SERVICE, token).status_code == 200


def test_epic_style_nbf_before_iat_is_accepted(client, rs384):
    now = int(time.time())
    assert call(client, SERVICE, rs384.token(BASE + SERVICE, ISS, nbf=now - 300)).status_code == 200


def test_expiry_within_leeway_is_accepted(client, es384):
    token = es384.token(BASE + SERVICE, ISS, iat=int(time.time()) - 310, lifetime=300)
    assert call(client, SERVICE, token).status_code == 200


def test_public_base_url_trailing_slash_is_ignored(make_client, es384):
    client = make_client(public_base_url=BASE + "/")
    assert call(client, SERVICE, es384.token(BASE + SERVICE, ISS)).status_code == 200


def test_health_metrics_and_preflight_need_no_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    preflight = client.options(
        SERVICE,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_auth_mode_off_needs_no_token(tmp_path):
    settings = Settings.from_env({}, auth_mode="off", data_dir=tmp_path)
    client = create_app(settings, store=NullStore()).test_client()
    assert call(client, SERVICE).status_code == 200


# --- rejected tokens ------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz"])
def test_missing_token(client, authorization):
    before = rejections("missing_token")
    assert_rejected(call(client, SERVICE, authorization=authorization), "missing_token", before)


@pytest.mark.parametrize("path", [DISCOVERY, FEEDBACK])
def test_missing_token_on_discovery_and_feedback(client, path):
    assert_rejected(call(client, path))


@pytest.mark.parametrize(
    "token", ["not-a-jwt", "abc.def", "abc.def.ghi", "eyJhbGciOiJFUzM4NCJ9.e30.e30.x.y"]
)
def test_malformed_token(client, token):
    before = rejections("malformed")
    assert_rejected(call(client, SERVICE, token), "malformed", before)


def test_alg_none_rejected(client, es384):
    now = int(time.time())
    token = unsigned_token(
        {"alg": "none", "typ": "JWT", "kid": es384.kid},
        {"iss": ISS, "aud": BASE + SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
    )
    before = rejections("bad_algorithm")
    assert_rejected(call(client, SERVICE, token), "bad_algorithm", before)


@pytest.mark.parametrize("signer_name", ["es384", "rs384"])
def test_hs256_keyed_with_the_public_key_pem_rejected(client, request, signer_name):
    """The classic key-confusion attack: the public key used as an HMAC secret."""
    signer = request.getfixturevalue(signer_name)
    now = int(time.time())
    token = unsigned_token(
        {"alg": "HS256", "typ": "JWT", "kid": signer.kid},
        {"iss": ISS, "aud": BASE + SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
        secret=signer.public_pem(),
    )
    before = rejections("bad_algorithm")
    assert_rejected(call(client, SERVICE, token), "bad_algorithm", before)


def test_alg_that_does_not_fit_the_key_rejected(client, es384, rs384):
    """An RSA algorithm named with the kid of an EC key (and the reverse) is refused."""
    before = rejections("bad_algorithm")
    token = rs384.token(BASE + SERVICE, ISS, header={"kid": es384.kid})
    assert_rejected(call(client, SERVICE, token), "bad_algorithm", before)
    token = rs384.token(BASE + SERVICE, ISS, alg="RS256")  # JWK says alg RS384
    assert_rejected(call(client, SERVICE, token), "bad_algorithm", before + 1)


def test_signature_by_another_key_rejected(client, es384):
    impostor = Signer.es384(kid=es384.kid)
    before = rejections("bad_signature")
    assert_rejected(
        call(client, SERVICE, impostor.token(BASE + SERVICE, ISS)), "bad_signature", before
    )


@pytest.mark.parametrize(
    "aud",
    [
        BASE + DISCOVERY,
        BASE + FEEDBACK,
        "http://cds.example.org/base/cds-services/leg-cramp-referral",
        BASE + SERVICE + "/",
        ["https://other.example.org"],
    ],
)
def test_wrong_audience_rejected(client, es384, aud):
    before = rejections("wrong_audience")
    assert_rejected(call(client, SERVICE, es384.token(aud, ISS)), "wrong_audience", before)


def test_expired_rejected(client, es384):
    token = es384.token(BASE + SERVICE, ISS, iat=int(time.time()) - 400, lifetime=300)
    before = rejections("expired")
    assert_rejected(call(client, SERVICE, token), "expired", before)


def test_issued_in_the_future_rejected(client, es384):
    token = es384.token(BASE + SERVICE, ISS, iat=int(time.time()) + 120, lifetime=120)
    before = rejections("not_yet_valid")
    assert_rejected(call(client, SERVICE, token), "not_yet_valid", before)


def test_nbf_in_the_future_rejected(client, es384):
    token = es384.token(BASE + SERVICE, ISS, nbf=int(time.time()) + 120)
    before = rejections("not_yet_valid")
    assert_rejected(call(client, SERVICE, token), "not_yet_valid", before)


def test_lifetime_over_five_minutes_rejected(client, es384):
    assert call(client, SERVICE, es384.token(BASE + SERVICE, ISS, lifetime=300)).status_code == 200
    before = rejections("lifetime_too_long")
    assert_rejected(
        call(client, SERVICE, es384.token(BASE + SERVICE, ISS, lifetime=301)),
        "lifetime_too_long",
        before,
    )


def test_replayed_jti_rejected(client, rs384):
    jti = str(uuid.uuid4())
    assert call(client, SERVICE, rs384.token(BASE + SERVICE, ISS, jti=jti)).status_code == 200
    before = rejections("replay")
    # The same token again, and a fresh token reusing the jti: both replays.
    assert_rejected(
        call(client, SERVICE, rs384.token(BASE + SERVICE, ISS, jti=jti)), "replay", before
    )


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_claim_rejected(client, es384, claim):
    before = rejections("missing_claim")
    assert_rejected(
        call(client, SERVICE, es384.token(BASE + SERVICE, ISS, drop=(claim,))),
        "missing_claim",
        before,
    )


def test_empty_jti_rejected(client, es384):
    before = rejections("missing_claim")
    assert_rejected(
        call(client, SERVICE, es384.token(BASE + SERVICE, ISS, jti="")), "missing_claim", before
    )


@pytest.mark.parametrize(
    "claims", [{"exp": str(int(time.time()) + 300)}, {"iat": True}, {"iss": [ISS]}, {"jti": 42}]
)
def test_claims_of_the_wrong_type_rejected(client, es384, claims):
    claims = {"iss": ISS, **claims}
    assert_rejected(call(client, SERVICE, es384.token(BASE + SERVICE, **claims)))


def test_untrusted_issuer_rejected(client, es384):
    before = rejections("untrusted_issuer")
    assert_rejected(
        call(client, SERVICE, es384.token(BASE + SERVICE, "https://evil.example")),
        "untrusted_issuer",
        before,
    )


def test_unknown_kid_without_jku_rejected(client):
    stranger = Signer.es384()
    before = rejections("unknown_key")
    assert_rejected(
        call(client, SERVICE, stranger.token(BASE + SERVICE, ISS)), "unknown_key", before
    )


# --- keys from a jku URL (a real HTTP server on loopback) ------------------------------


@pytest.fixture
def jwks_server(httpserver):
    """Serves whatever JWK Set ``served["jwks"]`` holds at /jwks.json."""
    served = {"jwks": {"keys": []}, "status": 200}

    def handler(_request):
        return Response(
            json.dumps(served["jwks"]), status=served["status"], content_type="application/json"
        )

    httpserver.expect_request("/jwks.json").respond_with_handler(handler)
    served["url"] = httpserver.url_for("/jwks.json")
    return served


def fetches(httpserver, path="/jwks.json") -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


def test_keys_from_a_trusted_jku(make_client, httpserver, jwks_server, es384, rs384):
    jwks_server["jwks"] = jwks(es384, rs384)
    client = make_client(keys=(), jwks_file="", trusted_jku=(jwks_server["url"],))
    for signer in (es384, rs384, es384):
        token = signer.token(BASE + SERVICE, ISS, header={"jku": jwks_server["url"]})
        assert call(client, SERVICE, token).status_code == 200
    assert fetches(httpserver) == 1  # cached (CDS_JWKS_CACHE_TTL)


def test_jwks_cache_expires_after_ttl(make_client, httpserver, jwks_server, es384, clock):
    jwks_server["jwks"] = jwks(es384)
    client = make_client(
        keys=(), jwks_file="", trusted_jku=(jwks_server["url"],), jwks_cache_ttl=600
    )
    header = {"jku": jwks_server["url"]}
    assert call(client, SERVICE, es384.token(BASE + SERVICE, ISS, header=header)).status_code == 200
    clock[0] += 601
    assert call(client, SERVICE, es384.token(BASE + SERVICE, ISS, header=header)).status_code == 200
    assert fetches(httpserver) == 2


def test_key_rotation_refetches_the_jwk_set(make_client, httpserver, jwks_server, es384, clock):
    old, new = es384, Signer.es384()
    jwks_server["jwks"] = jwks(old)
    client = make_client(keys=(), jwks_file="", trusted_jku=(jwks_server["url"],))
    header = {"jku": jwks_server["url"]}
    assert call(client, SERVICE, old.token(BASE + SERVICE, ISS, header=header)).status_code == 200
    assert fetches(httpserver) == 1

    jwks_server["jwks"] = jwks(old, new)  # the client rotates its keys
    clock[0] += web_jwks.JWKS_REFETCH_MIN_INTERVAL
    assert call(client, SERVICE, new.token(BASE + SERVICE, ISS, header=header)).status_code == 200
    assert fetches(httpserver) == 2


def test_unknown_kid_refetches_are_rate_limited(make_client, httpserver, jwks_server, es384, clock):
    jwks_server["jwks"] = jwks(es384)
    client = make_client(keys=(), jwks_file="", trusted_jku=(jwks_server["url"],))
    header = {"jku": jwks_server["url"]}
    assert call(client, SERVICE, es384.token(BASE + SERVICE, ISS, header=header)).status_code == 200
    before = rejections("unknown_key")
    for _ in range(5):
        stranger = Signer.es384()
        token = stranger.token(BASE + SERVICE, ISS, header=header)
        assert_rejected(call(client, SERVICE, token))
        clock[0] += 1
    assert rejections("unknown_key") == before + 5
    assert fetches(httpserver) == 1  # fetched 5 s ago at most: no refetch yet
    clock[0] += web_jwks.JWKS_REFETCH_MIN_INTERVAL
    for _ in range(3):
        assert_rejected(
            call(client, SERVICE, Signer.es384().token(BASE + SERVICE, ISS, header=header))
        )
    assert fetches(httpserver) == 2  # one refetch, then the limit applies again


def test_untrusted_jku_is_never_fetched(make_client, httpserver, jwks_server, es384):
    jwks_server["jwks"] = jwks(es384)
    trusted = httpserver.url_for("/trusted.json")
    client = make_client(keys=(), jwks_file="", trusted_jku=(trusted,))
    token = es384.token(BASE + SERVICE, ISS, header={"jku": jwks_server["url"]})
    before = rejections("untrusted_jku")
    assert_rejected(call(client, SERVICE, token), "untrusted_jku", before)
    assert len(httpserver.log) == 0


def test_untrusted_issuer_never_triggers_a_fetch(make_client, httpserver, jwks_server, es384):
    jwks_server["jwks"] = jwks(es384)
    client = make_client(keys=(), jwks_file="", trusted_jku=(jwks_server["url"],))
    token = es384.token(BASE + SERVICE, "https://evil.example", header={"jku": jwks_server["url"]})
    assert_rejected(call(client, SERVICE, token))
    assert len(httpserver.log) == 0


def test_key_from_the_file_is_used_whatever_the_jku(make_client, httpserver, jwks_server, es384):
    """Keys exchanged out of band are trusted; an unlisted jku is then simply not fetched."""
    client = make_client(keys=(es384,))
    token = es384.token(BASE + SERVICE, ISS, header={"jku": jwks_server["url"]})
    assert call(client, SERVICE, token).status_code == 200
    assert len(httpserver.log) == 0


def test_unreachable_jwk_set(make_client, httpserver, jwks_server, es384):
    jwks_server["status"] = 500
    client = make_client(keys=(), jwks_file="", trusted_jku=(jwks_server["url"],))
    token = es384.token(BASE + SERVICE, ISS, header={"jku": jwks_server["url"]})
    before = rejections("jwks_unavailable")
    assert_rejected(call(client, SERVICE, token), "jwks_unavailable", before)


def test_jwk_set_fetch_times_out(make_client, httpserver, es384):
    def slow(_request):
        time.sleep(1.0)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/slow.json").respond_with_handler(slow)
    url = httpserver.url_for("/slow.json")
    client = make_client(keys=(), jwks_file="", trusted_jku=(url,), jwks_fetch_timeout=0.2)
    started = time.monotonic()
    assert_rejected(call(client, SERVICE, es384.token(BASE + SERVICE, ISS, header={"jku": url})))
    assert time.monotonic() - started < 0.9


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["public_base_url", "trusted_issuers", "keys"])
def test_jwt_mode_refuses_to_start_without_settings(make_client, missing):
    overrides = {
        "public_base_url": "",
        "trusted_issuers": (),
        "keys": {"jwks_file": "", "trusted_jku": ()},
    }[missing]
    with pytest.raises(ConfigError):
        make_client(**(overrides if isinstance(overrides, dict) else {missing: overrides}))


def test_unusable_jwks_file_stops_start(make_client, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}')
    with pytest.raises(ConfigError):
        make_client(jwks_file=str(bad))
    with pytest.raises(ConfigError):
        make_client(jwks_file=str(tmp_path / "absent.json"))


def test_private_key_material_in_jwks_file_is_not_kept(tmp_path, es384):
    private = {**es384.jwk(), "d": "AAAA"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [private]}))
    keys = security.load_jwks_file(str(path))
    assert "d" not in keys[es384.kid]


# --- replay cache ---------------------------------------------------------------------


def test_replay_cache_is_thread_safe_and_forgets_expired_jtis():
    cache = ReplayCache()
    results = []
    expires = time.time() + 60

    def use():
        results.append(cache.first_use(ISS, "same-jti", expires))

    threads = [threading.Thread(target=use) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1

    cache.first_use(ISS, "old", time.time() - 1)
    cache._last_purge = 0.0
    assert cache.first_use(ISS, "old", time.time() + 60)  # expired entries are forgotten
    assert len(cache) == 2
    assert cache.first_use("https://other.example", "same-jti", expires)  # per issuer


def test_replay_is_refused_by_another_worker_sharing_the_database(tmp_path, es384):
    """Two app instances (two gunicorn workers) on one database: a token is used once."""
    from cds_service.storage import Store

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks(es384)))
    settings = Settings.from_env(
        {},
        auth_mode="jwt",
        jwks_file=str(jwks_file),
        trusted_issuers=(ISS,),
        public_base_url=BASE,
        data_dir=tmp_path,
    )
    worker_1 = create_app(settings, store=Store(settings)).test_client()
    worker_2 = create_app(settings, store=Store(settings)).test_client()
    token = es384.token(BASE + DISCOVERY, ISS)
    assert call(worker_1, DISCOVERY, token).status_code == 200
    assert call(worker_2, DISCOVERY, token).status_code == 401
    fresh = es384.token(BASE + DISCOVERY, ISS)
    assert call(worker_2, DISCOVERY, fresh).status_code == 200
