"""The service tried as a developer tries it: in the real CDS Hooks sandbox, in Chromium.

The sandbox (github.com/cds-hooks/sandbox, built with ``npm ci && npm run build`` outside this
repository and named by ``CDS_SANDBOX_BUILD``) is served from one loopback port, the service
(gunicorn, as ``make run`` starts it, verifying the sandbox's ES384 JWTs) from another and a
FHIR server holding the chart from a third, so every call the page makes is cross-origin and
CORS must be right on both. The page is opened as the sandbox's README says,
``?serviceDiscoveryURL=...&fhirServiceUrl=...&patientId=...``; the sandbox reads the chart in
the browser, fills the prefetch itself and calls the service. Outside hosts are blocked by
Chromium's ``--host-resolver-rules`` (the sandbox also asks its public default services,
which must fail); no Playwright request routing, which would answer CORS preflights itself.

Checked: the patient-view cards appear as the service sent them; a click on a suggestion
and a dismissal with a reason reach the feedback endpoint, are stored, show in
``cds-service report`` and suppress the card on the next visit; the Rx View (order-select)
and Rx Sign (order-sign) tabs show the order-time cards for a statin and a thiazide.
Screenshots are written to pytest's temporary directory (their paths are printed).

Skipped, with the reason, when ``CDS_SANDBOX_BUILD`` is unset or not a build, or when
/usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from browser import chromium, needs_chromium, playwright_sync_api
from sandbox_site import BrowserFhirServer, StaticSite, leg_cramp_chart, sandbox_jwks
from served import BIN, ROOT, Gunicorn, free_port

BUILD_VARIABLE = "CDS_SANDBOX_BUILD"
HOW_TO_BUILD = (
    f"{BUILD_VARIABLE} is unset or not a build of the CDS Hooks sandbox: "
    "git clone https://github.com/cds-hooks/sandbox; cd sandbox; npm ci && npm run build; "
    f"then {BUILD_VARIABLE}=$PWD/build (keep it outside this repository)"
)
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
WAIT_MS = 90_000  # a loaded two-core machine runs gunicorn, chromium and the sandbox's React
PATIENTS = {"view": "sandbox-view", "feedback": "sandbox-feedback", "orders": "sandbox-orders"}
STATIN = ("simvastatin 20", "Simvastatin 20 MG Oral Tablet", "312961")
THIAZIDE = ("hydrochlorothiazide 25", "Hydrochlorothiazide 25 MG Oral Tablet", "310798")
SUPPRESSING = ("urn:leg-cramp-cds:override-reason", "already-under-care")


def _build() -> Path | None:
    raw = os.environ.get(BUILD_VARIABLE, "")
    build = Path(raw) if raw else None
    if build and (build / "index.html").is_file() and (build / "app.bundle.js").is_file():
        return build
    return None


sync_api = playwright_sync_api()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(_build() is None, reason=HOW_TO_BUILD),
    needs_chromium,
    pytest.mark.skipif(os.name != "posix", reason="gunicorn needs a POSIX system"),
]


@pytest.fixture(scope="module")
def site():
    build = _build()
    assert build is not None
    with StaticSite(build) as served:
        yield served


@pytest.fixture(scope="module")
def fhir():
    from pytest_httpserver import HTTPServer

    httpserver = HTTPServer(host="127.0.0.1", port=0)
    httpserver.start()
    charts = [resource for patient in PATIENTS.values() for resource in leg_cramp_chart(patient)]
    server = BrowserFhirServer(httpserver, charts)
    try:
        yield server
    finally:
        httpserver.clear()
        httpserver.stop()


@pytest.fixture(scope="module")
def service(site, tmp_path_factory):
    """gunicorn in JWT mode trusting only the sandbox (its key given as a file, as the README
    says for offline use) and letting only the sandbox's origin read its answers."""
    data = tmp_path_factory.mktemp("sandbox-service")
    jwks = data / "sandbox-jwks.json"
    jwks.write_text(json.dumps(sandbox_jwks(_build())))
    port = free_port()
    env = {
        **os.environ,
        "CDS_AUTH_MODE": "jwt",
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_TRUSTED_ISSUERS": SANDBOX_ISSUER,
        "CDS_JWKS_FILE": str(jwks),
        "CDS_CORS_ORIGINS": site.base,
        "CDS_DATA_DIR": str(data / "data"),
    }
    for name in ("CDS_TODAY", "CDS_DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    with Gunicorn(env, port=port) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    # Only loopback: sandbox.cds-hooks.org and its default services never answer.
    with chromium("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1") as launched:
        yield launched


class Sandbox:
    """One sandbox tab: what it asked of our service and the FHIR server, what it logged."""

    def __init__(self, browser, site, service, fhir) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 2000})
        self.page = self.context.new_page()
        self.site, self.service, self.fhir = site, service, fhir
        self.console: list[str] = []
        self.failed: list[str] = []
        self.answers: list[tuple[str, str, int]] = []  # method, url, status: service and FHIR
        self.cors: dict[str, str | None] = {}  # our service's URL -> Access-Control-Allow-Origin
        self.discovery: dict = {}  # the discovery document the sandbox read
        self.outside: list[str] = []  # answers from any host but loopback
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.console.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._answered)

    def _ours(self, url: str) -> bool:
        return url.startswith((self.service.base, self.fhir.base))

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def _failed(self, request) -> None:
        self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def _answered(self, response) -> None:
        if urlsplit(response.url).hostname not in ("127.0.0.1", None):
            self.outside.append(response.url)  # must never happen: only loopback resolves
        if self._ours(response.url):
            self.answers.append((response.request.method, response.url, response.status))
        if response.url.startswith(self.service.base):
            self.cors[response.url] = response.headers.get("access-control-allow-origin")

    def url(self, patient: str) -> str:
        query = {
            "serviceDiscoveryURL": f"{self.service.base}/cds-services",
            "fhirServiceUrl": self.fhir.base,
            "patientId": patient,
        }
        return f"{self.site.base}/?{urlencode(query)}"

    def hook_call(self, service_id: str, draft_code: str | None = None):
        """``with sandbox.hook_call(id) as call:`` waits for the page's POST to that service
        (carrying ``draft_code`` in its body, if given); ``call.value`` is the response."""
        endpoint = f"{self.service.base}/cds-services/{service_id}"

        def wanted(response) -> bool:
            request = response.request
            return (
                response.url == endpoint
                and request.method == "POST"
                and (draft_code is None or draft_code in (request.post_data or ""))
            )

        return self.page.expect_response(wanted, timeout=WAIT_MS)

    def feedback_call(self, service_id: str):
        endpoint = f"{self.service.base}/cds-services/{service_id}/feedback"
        return self.page.expect_response(
            lambda r: r.url == endpoint and r.request.method == "POST", timeout=WAIT_MS
        )

    def cards(self):
        return self.page.locator("[class*='decision-card']")

    def card(self, summary: str):
        return self.cards().filter(has_text=summary)

    def shot(self, directory: Path, name: str) -> Path:
        path = directory / f"sandbox-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def problems(self) -> list[str]:
        """Failures on the way to our service or the FHIR server (the sandbox's own default
        services and stylesheet are meant to be unreachable here)."""
        ours = (self.service.base, self.fhir.base)
        bad = [f for f in self.failed if any(base in f for base in ours)]
        bad += [f"{m} {u}: {s}" for m, u, s in self.answers if s >= 400]
        bad += [c for c in self.console if any(base in c for base in ours)]
        bad += [c for c in self.console if "CORS" in c or "page error" in c]
        bad += [f"answer from outside loopback: {url}" for url in self.outside]
        return bad


@pytest.fixture
def sandbox(browser, site, service, fhir):
    tab = Sandbox(browser, site, service, fhir)
    yield tab
    tab.context.close()


def _open(sandbox: Sandbox, patient: str):
    """Open the sandbox on ``patient``; the patient-view response it received."""
    discovery_url = f"{sandbox.service.base}/cds-services"
    try:
        with (
            sandbox.page.expect_response(
                lambda r: r.url == discovery_url and r.request.method == "GET", timeout=WAIT_MS
            ) as discovery,
            sandbox.hook_call("leg-cramp-referral") as call,
        ):
            sandbox.page.goto(sandbox.url(patient), wait_until="load", timeout=WAIT_MS)
        response = call.value
        sandbox.discovery = discovery.value.json()
    except sync_api.TimeoutError:
        pytest.fail(
            "the sandbox never called leg-cramp-referral; Access-Control-Allow-Origin of our "
            f"answers (the page is {sandbox.site.base}): {sandbox.cors}; "
            f"problems: {sandbox.problems()}; console: {sandbox.console}"
        )
    assert response.status == 200, response.text()
    assert response.headers.get("access-control-allow-origin") == sandbox.site.base
    body = response.json()
    if body["cards"]:
        sandbox.cards().first.wait_for(timeout=WAIT_MS)
    return body


def _topic(card: dict) -> str:
    return card["source"]["topic"]["code"]


def _by_topic(cards: list[dict]) -> dict[str, dict]:
    return {_topic(card): card for card in cards}


def _report(service: Gunicorn) -> dict:
    done = subprocess.run(
        [str(BIN / "cds-service"), "report", "--json"],
        cwd=ROOT,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def _row(report: dict, route: str) -> dict:
    rows = [row for row in report["rows"] if row["route"] == route]
    assert rows, f"no {route} row in the report: {report['rows']}"
    total = {name: sum(row[name] for row in rows) for name in ("issued", "accepted", "overridden")}
    total["suppressed"] = sum(row["suppressed"] for row in rows)
    total["override_reasons"] = [r for row in rows for r in row["override_reasons"]]
    return total


def test_patient_view_cards_appear_in_the_sandbox(sandbox, service, fhir, tmp_path):
    body = _open(sandbox, PATIENTS["view"])
    cards = _by_topic(body["cards"])
    assert list(cards) == ["urgent-care", "vascular", "primary-care-workup"], list(cards)
    # Shown as sent: the critical card first, each once.
    shown_summaries = [text.splitlines()[0].strip() for text in sandbox.cards().all_inner_texts()]
    assert shown_summaries == [card["summary"] for card in body["cards"]]
    for card in body["cards"]:
        shown = sandbox.card(card["summary"])
        assert shown.count() == 1, f"card not shown: {card['summary']}"
        text = shown.inner_text()
        assert card["source"]["label"] in text
        for suggestion in card.get("suggestions", []):
            assert shown.get_by_role("button", name=suggestion["label"]).count() == 1
        for link in card.get("links", []):
            assert shown.get_by_role("button", name=link["label"]).count() == 1
    vascular = sandbox.card(cards["vascular"]["summary"])
    assert "0.72" in vascular.inner_text()  # the evidence, rendered from the Markdown detail
    # The sandbox read the chart from the FHIR server itself and sent it as prefetch.
    assert any(r["path"].endswith(f"/Patient/{PATIENTS['view']}") for r in fhir.requests)
    # The explanation link opens our page, on our service, in a new tab.
    with sandbox.context.expect_page(timeout=WAIT_MS) as opened:
        vascular.get_by_role("button", name="Why this card: the rules explained").click()
    explanation = opened.value
    explanation.wait_for_load_state("load", timeout=WAIT_MS)
    assert explanation.url.startswith(f"{service.base}/explain/vascular")
    assert "Vascular" in explanation.inner_text("h1")
    explanation.close()
    sandbox.shot(tmp_path, "patient-view")
    assert not sandbox.problems(), sandbox.problems()


def test_feedback_from_the_sandbox_is_stored_reported_and_suppresses(sandbox, service, tmp_path):
    body = _open(sandbox, PATIENTS["feedback"])
    cards = _by_topic(body["cards"])
    vascular, workup = cards["vascular"], cards["primary-care-workup"]
    suggestion = vascular["suggestions"][0]
    # A click on the suggestion: "accepted", naming the suggestion.
    with sandbox.feedback_call("leg-cramp-referral") as call:
        sandbox.card(vascular["summary"]).get_by_role("button", name=suggestion["label"]).click()
    assert call.value.status == 200, call.value.text()
    sent = json.loads(call.value.request.post_data)["feedback"][0]
    assert (sent["card"], sent["outcome"]) == (vascular["uuid"], "accepted")
    assert sent["acceptedSuggestions"] == [{"id": suggestion["uuid"]}]
    # Dismissing the workup card with a reason from its menu: "overridden", with the reason.
    reason = next(r for r in workup["overrideReasons"] if r["code"] == SUPPRESSING[1])
    shown = sandbox.card(workup["summary"])
    shown.get_by_role("button", name="select dismiss reason").click()
    menu = sandbox.page.get_by_role("menuitem")
    menu.first.wait_for(timeout=WAIT_MS)
    assert menu.all_inner_texts() == [
        f"Override: {r['display']}" for r in workup["overrideReasons"]
    ]
    sandbox.shot(tmp_path, "dismiss-reasons")
    with sandbox.feedback_call("leg-cramp-referral") as call:
        sandbox.page.get_by_role("menuitem", name=f"Override: {reason['display']}").click()
    assert call.value.status == 200, call.value.text()
    sent = json.loads(call.value.request.post_data)["feedback"][0]
    assert sent["overrideReason"]["reason"] == {"code": SUPPRESSING[1], "system": SUPPRESSING[0]}
    shown.wait_for(state="detached", timeout=WAIT_MS)
    sandbox.shot(tmp_path, "feedback")

    report = _report(service)
    assert _row(report, "vascular")["accepted"] == 1
    overridden = _row(report, "primary-care-workup")
    assert overridden["overridden"] == 1
    assert overridden["override_reasons"] == [
        {"system": SUPPRESSING[0], "code": SUPPRESSING[1], "cards": 1}
    ]
    # The next visit from the same client: the overridden card is left out, the other stays.
    again = _open(sandbox, PATIENTS["feedback"])
    assert [_topic(card) for card in again["cards"]] == ["urgent-care", "vascular"]
    assert sandbox.cards().count() == 2
    assert _row(_report(service), "primary-care-workup")["suppressed"] == 1
    assert not sandbox.problems(), sandbox.problems()


ORDER_SERVICES = {"order-select": "leg-cramp-order-select", "order-sign": "leg-cramp-order-sign"}
DRUG_EVIDENCE = {STATIN: "1450", THIAZIDE: "3.1"}  # the CK and the potassium on the chart


def _discovered(sandbox: Sandbox) -> dict[str, str]:
    """Hook -> service id, from the discovery document the sandbox itself read."""
    return {service["hook"]: service["id"] for service in sandbox.discovery["services"]}


def _prescribe(sandbox: Sandbox, tab: str, drug: tuple[str, str, str], sign: bool) -> dict:
    """Choose ``drug`` on the Rx View or Rx Sign tab (and press Sign Order on Rx Sign); the
    order-time card the service sent for it, checked to be shown."""
    typed, name, rxnorm = drug
    hook = "order-sign" if sign else "order-select"
    page = sandbox.page
    if not page.get_by_role("heading", name=tab).count():
        page.get_by_role("button", name=tab, exact=True).click()
        page.get_by_role("heading", name=tab).wait_for(timeout=WAIT_MS)
    page.locator("input[name='medication-input']").fill(typed)
    choice = page.get_by_role("button", name=name, exact=True)
    with sandbox.hook_call(ORDER_SERVICES[hook], draft_code=rxnorm) as call:
        choice.click()
        if sign:
            page.get_by_role("button", name="Sign Order").click()
    response = call.value
    assert response.status == 200, response.text()
    assert response.headers.get("access-control-allow-origin") == sandbox.site.base
    sent = json.loads(response.request.post_data)
    draft = sent["context"]["draftOrders"]["entry"][0]["resource"]
    assert (sent["hook"], draft["resourceType"], draft["status"]) == (
        hook,
        "MedicationRequest",
        "draft",
    )
    cards = [c for c in response.json()["cards"] if _topic(c) == "medication-review"]
    assert len(cards) == 1, f"{hook} {name}: {response.json()['cards']}"
    card = cards[0]
    assert DRUG_EVIDENCE[drug] in card["detail"], card["detail"]  # the patient's own result
    sandbox.card(card["summary"]).wait_for(timeout=WAIT_MS)
    return card


def test_rx_view_and_rx_sign_show_order_time_cards(sandbox, service, tmp_path):
    """A statin and a thiazide, chosen on Rx View (order-select) and signed on Rx Sign
    (order-sign), for a patient with leg cramps, a raised CK and a low potassium."""
    _open(sandbox, PATIENTS["orders"])
    discovered = _discovered(sandbox)
    for hook, service_id in ORDER_SERVICES.items():
        assert discovered.get(hook) == service_id, f"discovery: {discovered}"
    for drug in (STATIN, THIAZIDE):
        _prescribe(sandbox, "Rx View", drug, sign=False)
        sandbox.shot(tmp_path, f"rx-view-{drug[2]}")
    signed = {}
    for drug in (STATIN, THIAZIDE):
        signed[drug] = _prescribe(sandbox, "Rx Sign", drug, sign=True)
        sandbox.shot(tmp_path, f"rx-sign-{drug[2]}")
    # Feedback on an order card: dismissed with a reason, stored and reported.
    card = signed[THIAZIDE]
    reason = next(r for r in card["overrideReasons"] if r["code"] == SUPPRESSING[1])
    sandbox.card(card["summary"]).get_by_role("button", name="select dismiss reason").click()
    with sandbox.feedback_call(ORDER_SERVICES["order-sign"]) as call:
        sandbox.page.get_by_role("menuitem", name=f"Override: {reason['display']}").click()
    assert call.value.status == 200, call.value.text()
    # Order cards are counted per service ("<service id>:<route>"): the dismissal is the
    # order-sign card's, and the same advice given on Rx View has no outcome.
    report = _report(service)
    assert _row(report, "leg-cramp-order-select:medication-review")["overridden"] == 0
    row = _row(report, "leg-cramp-order-sign:medication-review")
    assert (row["issued"], row["overridden"]) == (2, 1)
    assert row["override_reasons"] == [
        {"system": SUPPRESSING[0], "code": SUPPRESSING[1], "cards": 1}
    ]
    # Signing the same thiazide again: the override holds, for order-sign only.
    page = sandbox.page
    with sandbox.hook_call(ORDER_SERVICES["order-sign"], draft_code=THIAZIDE[2]) as call:
        page.get_by_role("button", name="Sign Order").click()
    assert not [c for c in call.value.json()["cards"] if _topic(c) == "medication-review"]
    suppressed = _row(_report(service), "leg-cramp-order-sign:medication-review")["suppressed"]
    assert suppressed == 1
    with sandbox.hook_call(ORDER_SERVICES["order-select"], draft_code=THIAZIDE[2]) as call:
        page.get_by_role("button", name="Rx View", exact=True).click()
    assert [_topic(c) for c in call.value.json()["cards"]] == ["medication-review"]
    sandbox.card(card["summary"]).wait_for(timeout=WAIT_MS)
    sandbox.shot(tmp_path, "rx-view-after-override")
    assert not sandbox.problems(), sandbox.problems()
