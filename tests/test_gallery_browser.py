"""The card gallery in a real browser: Debian's Chromium driven by Playwright.

The page is written by ``cds-service gallery`` and opened from disk (file://): it must load
nothing else (self-contained), run no script (it has none; an injected one is blocked by its
Content-Security-Policy), show every chart's section, fit a phone's width, and draw cards:
a screenshot of an urgent chart is checked to hold the critical card's red and dark text.

Skipped, with the reason, only when /usr/bin/chromium or the playwright package is missing
(``.ci/run`` installs both; ``playwright install`` is never used: no browser download).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import chromium, needs_chromium, playwright_sync_api, screenshot_colours
from synthea import SYNTHEA_DIR, synthea_files

from cds_service import examples
from cds_service.cli import main

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 800}
CRITICAL_RED = (0xCF, 0x22, 0x2E)  # .card.critical's border (templates/gallery.html)

playwright_sync_api()  # skips this module when the package is missing
pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "gallery.html"
    mp = pytest.MonkeyPatch()
    mp.setenv("CDS_TODAY", "2026-11-24")
    try:
        assert main(["gallery", str(out), "--shared-charts", str(SYNTHEA_DIR.parent)]) == 0
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _open(browser, gallery_file: Path, viewport: dict):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.problems = []
    page.requests = []
    page.on(
        "console",
        lambda msg: page.problems.append(msg.text) if msg.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(gallery_file.as_uri(), wait_until="load")
    return page


def test_every_chart_is_shown_and_nothing_is_fetched(browser, gallery_file):
    page = _open(browser, gallery_file, DESKTOP)
    shared = len(synthea_files()) if SYNTHEA_DIR.exists() else 0
    assert page.locator("section.chart").count() == len(examples.names()) + shared
    assert page.locator("section.chart h2").all_inner_texts()[0] == examples.names()[0]
    assert page.locator("article.card.critical").count() >= 2
    assert page.requests == [gallery_file.as_uri()], page.requests
    assert page.problems == []
    assert page.evaluate("document.scripts.length") == 0
    page.context.close()


def test_fits_a_phone(browser, gallery_file):
    page = _open(browser, gallery_file, PHONE)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow} px of horizontal scroll at 375 px"
    page.context.close()


def test_screenshot_of_an_urgent_chart(browser, gallery_file, tmp_path):
    page = _open(browser, gallery_file, DESKTOP)
    anchor = _anchor(page, "urgent-care-dvt")
    page.evaluate("(id) => document.getElementById(id).scrollIntoView()", anchor)
    shot = tmp_path / "gallery-urgent-care-dvt.png"
    page.screenshot(path=str(shot), full_page=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, f"screenshot only {len(data)} bytes"
    colours = screenshot_colours(page, data, CRITICAL_RED)
    assert (colours["width"], colours["height"]) == (DESKTOP["width"], DESKTOP["height"])
    assert colours["distinct"] > 50, colours
    assert colours["dark"] > 2000, colours  # text was drawn
    assert colours["red"] > 300, colours  # the critical card's border and badge
    print(f"screenshot: {shot}")
    page.context.close()


def _anchor(page, title: str) -> str:
    return page.evaluate(
        """(title) => [...document.querySelectorAll('section.chart')]
            .find(s => s.querySelector('h2').textContent === title).id""",
        title,
    )
