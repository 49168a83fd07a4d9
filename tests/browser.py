"""Debian's Chromium driven by Playwright, as every browser test starts it.

``playwright install`` is never used (no browser download): the tests drive /usr/bin/chromium
(``apt-get install chromium``; ``.ci/run`` installs it and the playwright package) and are
skipped, with the reason, when either is missing.
"""

from __future__ import annotations

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
