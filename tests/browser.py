"""Debian's Chromium driven by Playwright, as every browser test starts it.

``playwright install`` is never used (no browser download): the tests drive /usr/bin/chromium
(``apt-get install chromium``; ``.ci/run`` installs it and the playwright package) and are
skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_MISSING = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
PLAYWRIGHT_MISSING = "the playwright Python package is not installed (pip install -e '.[dev]')"
# Headless, and no background traffic of Chromium's own (updates, sync, extensions).
QUIET_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
)

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and shutil.which("chromium") is None, reason=CHROMIUM_MISSING
)


def playwright_sync_api():
    """``playwright.sync_api``, or the calling test (or module) skipped with the reason."""
    return pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING)


@contextmanager
def chromium(*extra_args: str) -> Iterator:
    """A launched headless Chromium (QUIET_ARGS plus ``extra_args``), closed on leaving."""
    sync_api = playwright_sync_api()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*QUIET_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_colours(page, png: bytes, red: tuple[int, int, int] = (255, 0, 0)) -> dict:
    """Decoded in the browser (no image library needed): size, distinct colours, dark
    pixels (text) and pixels near ``red``."""
    blank = page.context.new_page()
    blank.set_content("<canvas id=c></canvas>")
    colours = blank.evaluate(
        """async ([src, red]) => {
        const img = new Image(); img.src = src; await img.decode();
        const c = document.getElementById('c'); c.width = img.width; c.height = img.height;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(0, 0, img.width, img.height).data;
        const seen = new Set(); let dark = 0; let reds = 0;
        for (let i = 0; i < px.length; i += 4) {
            seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
            if (px[i] + px[i + 1] + px[i + 2] < 200) dark++;
            if (Math.abs(px[i] - red[0]) + Math.abs(px[i + 1] - red[1])
                + Math.abs(px[i + 2] - red[2]) < 30) reds++;
        }
        return {width: img.width, height: img.height, distinct: seen.size, dark, red: reds};
    }""",
        ["data:image/png;base64," + base64.b64encode(png).decode(), list(red)],
    )
    blank.close()
    return colours
