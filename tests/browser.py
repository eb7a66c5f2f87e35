"""Headless Chromium for tests that look at a page as a person would.

Playwright drives Debian's ``chromium`` package (``executable_path``): it never
downloads a browser of its own, which CI's machines could not fetch. ``make
test`` installs chromium where it is missing; a browser test fails, never
skips, without it, so a machine that cannot show a page does not pass silently.

In a test module under ``tests/`` (``tests/conftest.py`` makes the fixtures
available)::

    @pytest.mark.browser
    def test_the_page_shows_its_title(browser_page, tmp_path):
        browser_page.goto(page_file.as_uri())
        assert browser_page.title() == "..."

``browser_page`` is a fresh page (its own context: no cookies or storage
shared between tests) on one Chromium kept for the test module; a script
error on the page fails the test. Outside pytest (a script that takes a
screenshot), use :func:`open_chromium`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_ENV = "FSLM_TEST_CHROMIUM"
"""Path of a Chromium to use instead of the one on PATH (another distribution's build, say)."""

CHROMIUM_NAMES = ("chromium", "chromium-browser")


class ChromiumMissing(RuntimeError):
    """No Chromium to drive on this machine."""


def chromium_path() -> str:
    """The Chromium executable: ``$FSLM_TEST_CHROMIUM``, else Debian's ``chromium`` on PATH."""
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    if configured:
        if not os.access(configured, os.X_OK):
            raise ChromiumMissing(f"{CHROMIUM_ENV}={configured} is not an executable file")
        return configured
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(
        "no chromium on PATH: the browser tests drive Debian's chromium "
        "(`make test` installs it; by hand: apt-get install chromium), or set FSLM_TEST_CHROMIUM"
    )


@contextmanager
def open_chromium(headless: bool = True) -> Iterator:
    """A Playwright ``Browser`` on the system Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=headless)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module (starting one takes seconds on a busy machine).

    Not one per session: while Playwright's sync API is open it marks its event
    loop as the thread's running loop between calls, and a later test module's
    ``asyncio.run`` (a served page's client, say) would then refuse to start.
    """
    missing = None
    try:
        chromium_path()
    except ChromiumMissing as error:
        missing = str(error)
    if missing:
        pytest.fail(missing, pytrace=False)
    with open_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium):
    """A new page in a context of its own; the test fails if a script on the page throws."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"scripts on the page threw: {errors}"
