"""The feedback report as a page (issue 13, "A report a person looks at"):
``cds-service report --html FILE`` and ``GET /admin/report`` (off by default), a
self-contained page with inline SVG charts and no patient data; rendered in Chromium when
/usr/bin/chromium and playwright are there (skipped otherwise)."""

from __future__ import annotations

import io
import re
import threading
from contextlib import redirect_stdout
from datetime import timedelta

import pytest
from browser import chromium, needs_chromium
from test_storage import make_settings
from test_suppression import NEPHROLOGY, URGENT, accept, cards_by_route, example, override, store_of

from cds_service import cli
from cds_service.web.app import create_app

PATIENT = "p-routes"


@pytest.fixture
def settings(tmp_path):
    # Overrides suppress without a JWT only when allowed (these test clients send none).
    return make_settings(
        tmp_path, "", patient_hash_salt="s", admin_report=True, suppression_without_auth=True
    )


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["cds_store"].close()


def with_feedback(app) -> None:
    client, store = app.test_client(), store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    accept(client, store, card, at=timedelta(minutes=-2))
    override(client, store, card, code="patient-declined", at=timedelta(minutes=-1))
    cards_by_route(client, example(NEPHROLOGY))  # suppressed now
    urgent = cards_by_route(client, example(URGENT, patient="p-urgent"))["urgent-care"]
    accept(client, store, urgent)
    assert store.flush()


def check_page(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert "<svg" in html and "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing external
    assert "@import" not in html and "url(" not in html
    for secret in (PATIENT, "p-urgent"):
        assert secret not in html


def test_cli_writes_a_self_contained_page(app, settings, tmp_path, monkeypatch):
    with_feedback(app)
    monkeypatch.setattr(cli.Settings, "from_env", classmethod(lambda cls, *a, **k: settings))
    target = tmp_path / "report.html"
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["report", "--html", str(target)]) == 0
    html = target.read_text()
    check_page(html)
    assert 'id="route-nephrology"' in html and 'id="route-urgent-care"' in html
    assert "patient-declined" in html and "1 suppressed" in html


def test_admin_report_is_off_by_default(tmp_path):
    app = create_app(make_settings(tmp_path, ""))
    try:
        response = app.test_client().get("/admin/report")
        assert response.status_code == 404
        assert "CDS_ADMIN_REPORT" in response.get_data(as_text=True)
    finally:
        app.extensions["cds_store"].close()


def test_admin_report_when_enabled(app):
    with_feedback(app)
    response = app.test_client().get("/admin/report")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    check_page(response.get_data(as_text=True))


@pytest.mark.browser
@needs_chromium
def test_report_renders_in_chromium(app, tmp_path):
    from werkzeug.serving import make_server

    with_feedback(app)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto(f"http://127.0.0.1:{httpd.server_port}/admin/report")
            assert response is not None and response.status == 200
            assert page.locator("h1").inner_text().startswith("Cards and feedback")
            assert page.locator("section svg").count() == 3  # urgent-care: no overrides
            assert page.locator("#route-nephrology rect.issued").count() >= 1
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            assert errors == []
            assert len(requests) == 1  # the page itself: nothing else is fetched
            png = page.screenshot(full_page=True)
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
            (tmp_path / "report.png").write_bytes(png)
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def _report(settings, monkeypatch, *argv: str) -> str:
    monkeypatch.setattr(cli.Settings, "from_env", classmethod(lambda cls, *a, **k: settings))
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["report", *argv]) == 0
    return out.getvalue()


def test_no_feedback_yet_is_said_not_shown_as_zero_percent(app, settings, tmp_path, monkeypatch):
    """Cards issued and nobody has answered: "no feedback", never a 0 % acceptance, and each
    chart's caption above its chart (also "No overrides.")."""
    client, store = app.test_client(), store_of(app)
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))
    assert store.flush()
    table = _report(settings, monkeypatch)
    assert "rules fired" in table.splitlines()[1]
    assert "no feedback yet" in table and "%" not in table
    assert all(line.endswith("no feedback") for line in table.splitlines()[3:-2])
    target = tmp_path / "report.html"
    _report(settings, monkeypatch, "--html", str(target))
    html = target.read_text()
    check_page(html)
    assert "No feedback yet" in html and "%" not in html.split("</style>")[1]
    assert "<th>rules fired</th>" in html
    caption, chart = html.index("Override reasons (cards)"), html.index("No overrides.")
    assert caption < chart
    # Near miss: one answer anywhere and the rates are shown.
    accept(client, store, cards_by_route(client, example(NEPHROLOGY))["nephrology"])
    assert store.flush()
    table = _report(settings, monkeypatch)
    assert "no feedback yet" not in table and "%" in table
