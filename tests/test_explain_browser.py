"""The explanation pages in a real browser: Debian's Chromium driven by Playwright.

The app is served over real HTTP on 127.0.0.1 (a werkzeug server in a thread). Every page
(the index and each route) must render its title, headings and every rule id, have no
console errors, resolve every internal link (200, and #fragments that exist), link out only
to https URLs (never fetched), and fit a phone's width (375 px: no horizontal scroll). One
page is also screenshotted and the PNG checked to be a real picture.

Skipped, with the reason, only when /usr/bin/chromium or the playwright package is missing
(``.ci/run`` installs both; ``playwright install`` is never used: no browser download).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from urllib.parse import urldefrag, urlsplit

import pytest
from browser import chromium, needs_chromium, playwright_sync_api, screenshot_colours

from cds_service.config import Settings
from cds_service.web.app import create_app

PHONE = {"width": 375, "height": 800}

playwright_sync_api()  # skips this module when the package is missing
pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real app on 127.0.0.1 on a free port, in a thread; stopped after the module."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):  # the app writes its own access line
            pass

    settings = Settings.from_env(
        {}, today="2026-11-24", auth_mode="off", data_dir=tmp_path_factory.mktemp("explain-data")
    )
    app = create_app(settings)
    httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, name="explain-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", app
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser):
    """A phone-sized page that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport=PHONE, java_script_enabled=True)
    page = context.new_page()
    page.errors = []
    page.on(
        "console",
        lambda msg: (
            page.errors.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
    # Nothing may leave 127.0.0.1: the pages have no external resources.
    page.requests = []
    page.on("request", lambda req: page.requests.append(req.url))
    yield page
    context.close()


def _ruleset(app):
    return app.extensions["cds"].ruleset


def _fetch_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _check_page(page, base: str, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, url
    assert page.title().strip(), f"{url}: no <title>"
    assert page.locator("h1").count() == 1, f"{url}: one h1 expected"
    assert page.locator("h2").count() >= 2, f"{url}: headings missing"
    # Readable at a phone's width: nothing scrolls sideways.
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"{url}: horizontal scroll at 375 px ({widths})"
    # Links: internal ones resolve (200; a #fragment names an element), external ones are https.
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]'), a => a.href)")
    assert hrefs, f"{url}: no links"
    origin = urlsplit(base).netloc
    checked: dict[str, int] = {}
    for href in hrefs:
        target = urlsplit(href)
        if target.netloc == origin:
            document, fragment = urldefrag(href)
            if document not in checked:
                checked[document] = _fetch_status(document)
            assert checked[document] == 200, f"{url}: link {href} answers {checked[document]}"
            if fragment:
                if urldefrag(page.url)[0] == document:
                    present = page.locator(f"[id='{fragment}']").count()
                else:
                    present = page.context.request.get(document).text().count(f'id="{fragment}"')
                assert present, f"{url}: link {href} points to a missing #{fragment}"
        else:
            assert target.scheme == "https", f"{url}: external link {href} is not https"
    assert not page.errors, f"{url}: {page.errors}"
    outside = [r for r in page.requests if urlsplit(r).netloc not in (origin, "")]
    assert not outside, f"{url}: requests left the service: {outside}"


def test_index_renders_in_chromium(server, page):
    base, app = server
    _check_page(page, base, f"{base}/explain")
    text = page.inner_text("main")
    for route in _ruleset(app).routes:
        assert route.title in text
        assert page.locator(f"a[href='/explain/{route.code}']").count() == 1
    assert "Funding source" in page.inner_text("footer")


def test_every_route_page_renders_in_chromium(server, page):
    base, app = server
    for route in _ruleset(app).routes:
        _check_page(page, base, f"{base}/explain/{route.code}")
        assert route.title in page.inner_text("h1")
        for criterion in route.criteria.values():
            rule = page.locator(f"[id='rule-{criterion.id}']")
            assert rule.count() == 1, f"{route.code}: rule {criterion.id} missing"
            # collapsed (a <details>): in the page, not yet drawn
            assert criterion.id in rule.text_content()
        footer = page.inner_text("footer")
        for attribute in (
            "Bibliographic citation",
            "Developer",
            "Funding source",
            "Release date",
            "Revision date",
            "What Type of Doctor Treats Leg Cramps?",
        ):
            assert attribute in footer, f"{route.code}: {attribute} missing"


def test_fired_rules_come_first_and_are_marked(server, page):
    base, app = server
    route = next(r for r in _ruleset(app).routes if r.code == "nephrology")
    # The last rule that makes a card (a context rule is listed with a card, never fires).
    fired = [c.id for c in route.criteria.values() if c.fires and not c.context][-1]
    _check_page(page, base, f"{base}/explain/nephrology?rules={fired},no-such-rule")
    first = page.locator("details.rule").first
    assert first.get_attribute("id") == f"rule-{fired}"
    assert "fired" in (first.get_attribute("class") or "")
    assert first.get_attribute("open") is not None  # a fired rule is shown open
    assert page.locator("#fired").count() == 1
    assert "no-such-rule" not in page.content()


def test_screenshot_of_a_route_page(server, page, tmp_path):
    base, _app = server
    page.goto(f"{base}/explain/nephrology?rules=egfr-below-30-known-ckd", wait_until="load")
    shot = tmp_path / "explain-nephrology-375.png"
    page.screenshot(path=str(shot), full_page=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"screenshot only {len(data)} bytes"
    colours = screenshot_colours(page, data)  # not one flat colour, some dark text
    assert (colours["width"], colours["height"]) == (PHONE["width"], PHONE["height"])
    assert colours["distinct"] > 50, colours
    assert colours["dark"] > 1000, colours  # text was drawn
    print(f"screenshot: {shot}")


def test_unknown_route_is_404_in_the_browser(server, page):
    base, _app = server
    response = page.goto(f"{base}/explain/no-such-route", wait_until="load")
    assert response.status == 404
    assert "OperationOutcome" in page.content()


# 1280 x 800: a desktop screen. Before the rules were collapsible the urgent-care page was
# about 15,000 px tall; collapsed, every page is about 2,000-3,700 px (measured 2026-12-07).
DESKTOP = {"width": 1280, "height": 800}
MAX_COLLAPSED_HEIGHT = 5 * DESKTOP["height"] + 1000  # a few screens, with a margin


def test_every_page_fits_a_few_screens_when_collapsed(server, browser):
    base, app = server
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    heights = {}
    for path in ["", *(f"/{route.code}" for route in _ruleset(app).routes)]:
        page.goto(f"{base}/explain{path}", wait_until="load")
        heights[path or "index"] = page.evaluate("document.documentElement.scrollHeight")
    # Opened, the rules are all there: the longest page grows well past its collapsed height.
    page.goto(f"{base}/explain/urgent-care", wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    opened = page.evaluate("document.documentElement.scrollHeight")
    context.close()
    assert max(heights.values()) <= MAX_COLLAPSED_HEIGHT, heights
    assert opened > 2 * heights["/urgent-care"], (opened, heights["/urgent-care"])
