"""A real headless Chromium for the browser tests, through Playwright.

Debian's ``chromium`` (``/usr/bin/chromium``, or ``EPF_TEST_CHROMIUM``): Playwright's own
browser download does not work offline. Without a browser the tests skip, saying why; CI
installs one (``.ci/run``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _chromium() -> str | None:
    for candidate in (os.environ.get("EPF_TEST_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("BROWSER TESTS SKIPPED: playwright is not installed (the test extra has it)")
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "BROWSER TESTS SKIPPED: no Chromium; install Debian's: apt-get install -y chromium"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=_ARGS)
        yield launched
        launched.close()


@dataclass
class Page:
    """A page in its own offline context, with what went wrong while it ran."""

    page: Any
    problems: list[str] = field(default_factory=list)  # console errors, page errors, failures
    dialogs: list[str] = field(default_factory=list)


def _page(browser: Any, *, offline: bool) -> Iterator[Page]:
    context = browser.new_context(offline=offline, viewport={"width": 1400, "height": 900})
    # Nothing may leave the machine: a request to anything but the file or the local server
    # is a failure.
    local = ("file://", "http://127.0.0.1:")
    context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(local) else route.abort(),
    )
    page = context.new_page()
    seen = Page(page)
    page.on(
        "console",
        lambda m: (
            seen.problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: seen.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: seen.problems.append(f"request failed: {r.url}"))

    def dialog(d: Any) -> None:
        seen.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    yield seen
    context.close()


@pytest.fixture
def offline_page(browser: Any) -> Iterator[Page]:
    """A page with the network off: for a report file."""
    yield from _page(browser, offline=True)


@pytest.fixture
def local_page(browser: Any) -> Iterator[Page]:
    """A page that reaches the local server only: for ``epf serve``."""
    yield from _page(browser, offline=False)
