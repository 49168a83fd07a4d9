"""Where the FHIR client may go (issue 24): allowed origins, refused addresses, one 412.

A hook request names its own ``fhirServer``; the service must not become a way to reach its
cloud metadata endpoint or scan the network behind it. Names are resolved by a fake
``socket.getaddrinfo`` (``*.test`` names only; nothing real is looked up) and every
``connect`` to an address that is not loopback is stopped and recorded by the test, so the
tests only ever contact the fake FHIR server on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import json
import logging
import socket
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fhir_server import FhirServer, fhir_response, outcome
from jwt_helpers import Signer, jwks
from pytest_httpserver import HTTPServer

from cds_service.config import ConfigError, Settings
from cds_service.protocol import egress
from cds_service.protocol.egress import (
    CALLER_ISSUER,
    LOOPBACK_ORIGINS,
    OriginPolicy,
    RefusedAddress,
    address_refusal,
    parse_allowed_origin,
    resolve_checked,
)
from cds_service.protocol.fhir_client import FETCH_FAILED, FetchError, FhirFetcher
from cds_service.protocol.prefetch import prefetch_keys
from cds_service.web.app import create_app

TODAY = "2026-11-24"
TOKEN = "egress-token-5d2a"
URL = "/cds-services/leg-cramp-referral"
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"}
CRAMP = {
    "resourceType": "Condition",
    "id": "cramp1",
    "subject": {"reference": "Patient/p1"},
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "449918009"}]},
}


# --- the test's own network: a fake resolver, and nothing but loopback ------------------


class FakeDns:
    """``socket.getaddrinfo`` for ``*.test`` and the metadata names: each call takes the next
    answer of the name (the last one repeats); every other name goes to the real resolver
    (only IP literals and ``localhost`` are used)."""

    def __init__(self, real):
        self.real = real
        self.answers: dict[str, list[tuple[str, ...]]] = {}
        self.asked: list[str] = []

    def answer(self, name: str, *answers: str | tuple[str, ...]) -> None:
        self.answers[name] = [(a,) if isinstance(a, str) else a for a in answers]

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host not in self.answers and not host.endswith((".test", ".internal")):
            return self.real(host, port, family, type, proto, flags)
        self.asked.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        rows = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 4:
                rows.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            else:
                rows.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
        return rows


@pytest.fixture(autouse=True)
def dns(monkeypatch) -> FakeDns:
    fake = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture(autouse=True)
def attempts(monkeypatch) -> list[str]:
    """Addresses something tried to connect to that are not loopback (stopped, recorded)."""
    tried: list[str] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if isinstance(address, tuple):
            host = address[0].split("%")[0]
            if not ipaddress.ip_address(host).is_loopback:
                tried.append(host)
                raise OSError(errno.ENETUNREACH, "the tests contact loopback only")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


@pytest.fixture(autouse=True)
def no_caller_left_over():
    """The test client runs the app in this thread: forget the caller afterwards."""
    token = CALLER_ISSUER.set(None)
    yield
    CALLER_ISSUER.reset(token)


@pytest.fixture
def fhir():
    http_server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    http_server.start()
    server = FhirServer(http_server, [PATIENT, CRAMP], token=TOKEN)
    yield server
    server.release.set()
    http_server.clear()
    http_server.stop()


def port_of(server: FhirServer) -> int:
    return server.httpserver.port


def settings(tmp_path, **overrides) -> Settings:
    values = {
        "today": TODAY,
        "allow_http_fhir": True,
        "data_dir": tmp_path,
        "auth_mode": "off",
        "fhir_timeout": 30.0,  # wide: a loaded machine must not turn a slow answer into a 412
    }
    return Settings.from_env({}, **{**values, **overrides})


def hook_request(fhir_server: str) -> dict:
    """Nothing prefetched: every key must be fetched from ``fhir_server``."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "fhirServer": fhir_server,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "leg-cramp-referral",
        },
    }


def call(tmp_path, fhir_server: str, headers: dict | None = None, **overrides):
    app = create_app(settings(tmp_path, **overrides))
    try:
        return app.test_client().post(URL, json=hook_request(fhir_server), headers=headers)
    finally:
        app.extensions["cds_store"].close()


def the_412(response) -> str:
    assert response.status_code == 412, response.get_data(as_text=True)
    assert response.json["issue"][0]["code"] == "incomplete"
    assert TOKEN not in response.get_data(as_text=True)
    return response.json["issue"][0]["details"]["text"]


def fetched_types() -> set[str]:
    """The resource types the prefetch templates read (one fault handler each)."""
    return {k.template.split("?")[0].split("/")[0] for k in prefetch_keys([])}


# --- through the service: refused and failed fetches look the same ----------------------


def test_loopback_fhir_server_is_fetched_from_in_development(tmp_path, fhir, attempts):
    response = call(tmp_path, fhir.base)
    assert response.status_code == 200, response.json
    assert {r["path"] for r in fhir.requests} >= {"/fhir/Patient/p1", "/fhir/Condition"}
    assert attempts == []


def test_every_refused_or_failed_fetch_gives_the_same_412(tmp_path, fhir, dns, attempts, caplog):
    """Refused before any connection (origin, name, address) or failed after one (closed
    port, 401, 500, wrong resource type): the caller cannot tell which."""
    caplog.set_level(logging.INFO, logger="cds_service")
    port = port_of(fhir)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    dns.answer("metadata-v4.test", "169.254.169.254")
    dns.answer("metadata-v6.test", "fd00:ec2::254")
    dns.answer("mapped.test", "::ffff:169.254.169.254")
    dns.answer("link-local.test", "fe80::1")
    dns.answer("alibaba.test", "100.100.100.200")
    dns.answer("private.test", "10.0.0.7")
    dns.answer("loopback.test", "127.0.0.1")
    production = {"env": "production", "allow_http_fhir": True}

    def listed(name: str, **more) -> dict:
        return {"fhir_allowed_origins": (f"http://{name}:{port}",), **more}

    refused_before_connecting = {
        "origin not listed": (fhir.base, {"fhir_allowed_origins": ("https://fhir.example.org",)}),
        "no list in production": (fhir.base, production),
        "metadata address": (f"http://metadata-v4.test:{port}/fhir", listed("metadata-v4.test")),
        "AWS IPv6 metadata": (f"http://metadata-v6.test:{port}/fhir", listed("metadata-v6.test")),
        "IPv4-mapped metadata": (f"http://mapped.test:{port}/fhir", listed("mapped.test")),
        "link-local IPv6": (f"http://link-local.test:{port}/fhir", listed("link-local.test")),
        "Alibaba metadata": (f"http://alibaba.test:{port}/fhir", listed("alibaba.test")),
        "metadata name": (
            f"http://metadata.google.internal:{port}/fhir",
            listed("metadata.google.internal"),
        ),
        "loopback in production": (fhir.base, listed("127.0.0.1", **production)),
        "name to loopback in production": (
            f"http://loopback.test:{port}/fhir",
            listed("loopback.test", **production),
        ),
        "name to private in production": (
            f"http://private.test:{port}/fhir",
            listed("private.test", **production),
        ),
    }
    texts = {}
    for scenario, (server, overrides) in refused_before_connecting.items():
        texts[scenario] = the_412(call(tmp_path, server, **overrides))
        assert fhir.requests == [], scenario
        assert attempts == [], scenario
    assert "metadata.google.internal" not in dns.asked  # refused by name, never resolved

    texts["closed port"] = the_412(call(tmp_path, f"http://127.0.0.1:{closed_port}/fhir"))
    fhir.token = "another-token"
    texts["token refused"] = the_412(call(tmp_path, fhir.base))
    fhir.token = TOKEN
    for rtype in fetched_types():
        fhir.faults[rtype] = lambda request: fhir_response(outcome("exception", "boom"), 500)
    texts["HTTP 500"] = the_412(call(tmp_path, fhir.base))
    for rtype in fetched_types():
        fhir.faults[rtype] = lambda request: fhir_response({"resourceType": "Basic", "id": "x"})
    texts["wrong resource type"] = the_412(call(tmp_path, fhir.base))
    assert fhir.requests  # these did reach the server

    assert len(set(texts.values())) == 1, json.dumps(texts, indent=1)
    text = next(iter(texts.values()))
    assert f"patient ({FETCH_FAILED})" in text
    for word in ("HTTP", "401", "500", "unreachable", "refused", "Basic", "metadata", "origin"):
        assert word not in text
    # The reasons are in the log, without the URL.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("cds_service"))
    for reason in (
        "fhirServer origin is not allowed for this client",
        "resolves to a cloud metadata address",
        "resolves to a link-local address",
        "resolves to a cloud metadata name",
        "resolves to a loopback or private address (allowed in development only)",
        "server unreachable (ConnectionError)",
        "server refused the access token (HTTP 401)",
        "server answered HTTP 500",
        "server answered with Basic where a Patient was expected",
    ):
        assert reason in ours, reason
    assert ".test" not in ours and "127.0.0.1:" not in ours and "fhir.example.org" not in ours


# --- every connection is checked: rebinding cannot slip through --------------------------


def test_a_name_rebound_to_metadata_is_refused_on_the_next_connection(
    tmp_path, fhir, dns, attempts
):
    dns.answer("rebind.test", "127.0.0.1", "169.254.169.254")
    base = f"http://rebind.test:{port_of(fhir)}/fhir"
    fetcher = FhirFetcher(settings(tmp_path, fhir_allowed_origins=("http://rebind.test:*",)))
    try:
        first = fetcher(base, TOKEN, {"patient": "Patient/p1"})
        assert [r["id"] for r in first["patient"]] == ["p1"]
        fetcher.close()  # the kept-alive connection goes: the next one resolves again
        second = fetcher(base, TOKEN, {"patient": "Patient/p1"})
    finally:
        fetcher.close()
    assert second["patient"] == FetchError(
        "fhirServer host resolves to a cloud metadata address: refused, nothing sent"
    )
    assert len(fhir.requests) == 1
    assert dns.asked == ["rebind.test", "rebind.test"]
    assert attempts == []


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path, fhir, dns, attempts):
    """A client that checked one lookup and let the connection resolve again would reach
    127.0.0.1 (refused in production) with the second answer. Here the first answer, a
    public address, is the one connected to (the test stops that connection)."""
    dns.answer("flip.test", "93.184.216.34", "127.0.0.1")
    base = f"http://flip.test:{port_of(fhir)}/fhir"
    fetcher = FhirFetcher(
        settings(
            tmp_path,
            env="production",
            allow_http_fhir=True,
            fhir_allowed_origins=(f"http://flip.test:{port_of(fhir)}",),
        )
    )
    try:
        result = fetcher(base, TOKEN, {"patient": "Patient/p1"})
    finally:
        fetcher.close()
    assert result["patient"] == FetchError("server unreachable (ConnectionError)")
    assert attempts == ["93.184.216.34"]
    assert dns.asked == ["flip.test"]
    assert fhir.requests == []


def test_a_name_with_one_inward_address_among_others_is_refused(dns, attempts):
    dns.answer("mixed.test", ("93.184.216.34", "169.254.169.254"))
    with pytest.raises(RefusedAddress, match="metadata"):
        resolve_checked("mixed.test", 443, socket.AF_UNSPEC, allow_internal=True)
    assert attempts == []


# --- the address rules -------------------------------------------------------------------

ALWAYS_REFUSED = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.0.1",
    "fe80::1",
    "fd00:ec2::254",
    "100.100.100.200",
    "192.0.0.192",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:0:a9fe:a9fe",  # SIIT (IPv4-translated) 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (/96) of 169.254.169.254
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use NAT64 (/48) of 169.254.169.254
    "64:ff9b:1:a9:fe:a9fe::",  # local-use NAT64 (/56) of 169.254.169.254
    "64:ff9b:1:0:a9:fea9:fe00:0",  # local-use NAT64 (/64) of 169.254.169.254
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
]
INTERNAL = [
    "127.0.0.1",
    "127.0.0.2",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "fc00::1",
    # Forms Python calls global, internal all the same (a public IPv4 inside or not).
    "fec0::1",  # site-local (deprecated)
    "::5db8:d822",  # IPv4-compatible
    "::ffff:0:5db8:d822",  # SIIT
    "64:ff9b:1::5db8:d822",  # local-use NAT64 (/96)
    "64:ff9b:1:5db8:d8:2200::",  # local-use NAT64 (/48)
    "::ffff:0:a01:203",  # SIIT of 10.1.2.3
]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_link_local_metadata_and_special_addresses_are_always_refused(address):
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip, allow_internal=True) is not None
    assert address_refusal(ip, allow_internal=False) is not None


@pytest.mark.parametrize("address", INTERNAL)
def test_loopback_and_private_addresses_only_in_development(address):
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip, allow_internal=True) is None
    assert address_refusal(ip, allow_internal=False) == (
        "a loopback or private address (allowed in development only)"
    )


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address), allow_internal=False) is None


def test_internal_addresses_follow_the_environment_unless_set(tmp_path):
    assert settings(tmp_path).fhir_internal_addresses_allowed is True
    assert settings(tmp_path, env="production").fhir_internal_addresses_allowed is False
    on_a_private_network = settings(tmp_path, env="production", fhir_allow_internal_addresses=True)
    assert on_a_private_network.fhir_internal_addresses_allowed is True


# --- the origin rules --------------------------------------------------------------------


def test_origin_entries_parse_and_match():
    https = parse_allowed_origin("https://FHIR.example.org/")
    assert https == egress.Origin("https", "fhir.example.org", 443)
    policy = OriginPolicy(("https://fhir.example.org", "http://[::1]:*"), {})
    assert policy.allows("https://fhir.example.org/r4", None)
    assert policy.allows("https://fhir.example.org:443/r4", None)
    assert not policy.allows("https://fhir.example.org:8443/r4", None)
    assert not policy.allows("http://fhir.example.org/r4", None)
    assert not policy.allows("https://fhir.example.org.evil.test/r4", None)
    assert not policy.allows("https://user@fhir.example.org/r4", None)
    assert policy.allows("http://[::1]:8080/fhir", None)
    assert not policy.allows("0", None)


@pytest.mark.parametrize(
    "entry",
    [
        "fhir.example.org",
        "ftp://fhir.example.org",
        "https://fhir.example.org/r4",
        "https://u@fhir.example.org",
        "https://fhir.example.org:1:*",
        "https://h?x",
        "https://",
    ],
)
def test_a_setting_that_is_not_a_list_of_origins_stops_start_up(entry):
    with pytest.raises(ConfigError, match="^CDS_FHIR_ALLOWED_ORIGINS: "):
        Settings.from_env({"CDS_FHIR_ALLOWED_ORIGINS": f"https://ok.example, {entry}"})
    by_issuer = json.dumps({"https://ehr.example.org": [entry]})
    with pytest.raises(ConfigError, match="^CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER: "):
        Settings.from_env({"CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER": by_issuer})


@pytest.mark.parametrize("value", ["https://ehr=https://fhir", "[]", '{"https://ehr": "x"}'])
def test_origins_by_issuer_must_be_a_json_object_of_lists(value):
    with pytest.raises(ConfigError, match="^CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER: must be a JSON"):
        Settings.from_env({"CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER": value})


def test_default_origins_are_loopback_in_development_and_none_in_production():
    development = OriginPolicy.from_settings(Settings.from_env({}))
    assert development.default == tuple(parse_allowed_origin(o) for o in LOOPBACK_ORIGINS)
    for url in ("http://127.0.0.1:8080/fhir", "https://localhost:9/fhir", "http://[::1]:1/"):
        assert development.allows(url, None)
    assert not development.allows("https://fhir.example.org/r4", None)
    production = OriginPolicy.from_settings(Settings.from_env({"CDS_ENV": "production"}))
    assert production.default == ()
    assert not production.allows("http://127.0.0.1:8080/fhir", None)
    listed = Settings.from_env(
        {"CDS_ENV": "production", "CDS_FHIR_ALLOWED_ORIGINS": "https://fhir.example.org"}
    )
    assert OriginPolicy.from_settings(listed).allows("https://fhir.example.org/r4", None)


def test_the_issuer_selects_its_list_in_jwt_mode_only():
    environ = {
        "CDS_FHIR_ALLOWED_ORIGINS": "https://shared.example",
        "CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER": json.dumps(
            {"https://ehr-a.example": ["https://fhir-a.example"]}
        ),
    }
    jwt_mode = OriginPolicy.from_settings(Settings.from_env({**environ, "CDS_AUTH_MODE": "jwt"}))
    assert jwt_mode.allows("https://fhir-a.example/r4", "https://ehr-a.example")
    assert not jwt_mode.allows("https://shared.example/r4", "https://ehr-a.example")
    assert jwt_mode.allows("https://shared.example/r4", "https://ehr-b.example")
    assert not jwt_mode.allows("https://fhir-a.example/r4", "https://ehr-b.example")
    assert not jwt_mode.allows("https://fhir-a.example/r4", None)
    auth_off = OriginPolicy.from_settings(Settings.from_env(environ))
    assert auth_off.by_issuer == {}
    assert not auth_off.allows("https://fhir-a.example/r4", "https://ehr-a.example")


def test_the_verified_issuer_of_the_call_selects_its_origins(tmp_path, fhir):
    """Through the app in JWT mode: the same fhirServer is fetched from for the client
    whose list has it, and refused (412, no request) for another trusted client."""
    signer = Signer.es384()
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(signer)))
    base_url = "https://cds.example.org"
    listed, other = "https://ehr-a.example", "https://ehr-b.example"
    app = create_app(
        settings(
            tmp_path,
            auth_mode="jwt",
            jwks_file=str(tmp_path / "jwks.json"),
            trusted_issuers=(listed, other),
            public_base_url=base_url,
            fhir_allowed_origins=(),
            fhir_allowed_origins_by_issuer={listed: (f"http://127.0.0.1:{port_of(fhir)}",)},
        )
    )
    client = app.test_client()
    try:

        def post(issuer: str):
            token = signer.token(base_url + URL, issuer)
            return client.post(
                URL,
                json=hook_request(fhir.base),
                headers={"Authorization": f"Bearer {token}"},
            )

        refused = post(other)
        assert f"patient ({FETCH_FAILED})" in the_412(refused)
        assert fhir.requests == []
        allowed = post(listed)
        assert allowed.status_code == 200, allowed.json
        assert fhir.requests
    finally:
        app.extensions["cds_store"].close()


# --- TLS over a checked connection --------------------------------------------------------


def self_signed(tmp_path, name: str):
    """A certificate for ``name`` and its key (PEM files), trusted by being the CA bundle."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_fhir(tmp_path):
    """An https FHIR server on 127.0.0.1 whose certificate names ``tls.test``."""
    cert_file, key_file = self_signed(tmp_path, "tls.test")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            body = json.dumps(PATIENT).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert_file, seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name, verified", [("tls.test", True), ("other.test", False)])
def test_tls_over_a_checked_connection_verifies_the_certificate_for_the_name(
    tmp_path, tls_fhir, dns, monkeypatch, attempts, name, verified
):
    port, cert_file, seen = tls_fhir
    dns.answer(name, "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    fetcher = FhirFetcher(settings(tmp_path, fhir_allowed_origins=(f"https://{name}:*",)))
    try:
        result = fetcher(f"https://{name}:{port}/fhir", TOKEN, {"patient": "Patient/p1"})
    finally:
        fetcher.close()
    assert dns.asked == [name]
    if verified:
        assert [r["id"] for r in result["patient"]] == ["p1"]
        assert seen == ["/fhir/Patient/p1"]
    else:
        assert result["patient"] == FetchError("server unreachable (SSLError)")
        assert seen == []
    assert attempts == []
