"""Playwright against Debian's chromium and pytest-django's live server. A missing browser fails, never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CSP_MIDDLEWARE = "dashboard.middleware.ContentSecurityPolicyMiddleware"



@pytest.fixture(scope="session", autouse=True)
def content_security_policy():
    """Run the browser under the dashboard's CSP, so an inline script or style the page needs would break it.

    Session-scoped and autouse so it is in place before live_server builds its handler.
    """
    from django.conf import settings

    if CSP_MIDDLEWARE not in settings.MIDDLEWARE:  # until config/settings.py lists it
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, CSP_MIDDLEWARE]
    yield


@pytest.fixture
def worker():
    """Sync work that runs its own event loop (refresh_tools, an MCP client) or touches the database stays off
    Playwright's loop, on two threads whose connections are closed after the test (so its flush is not blocked)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.submit(connections.close_all).result(timeout=10)
    pool.shutdown()


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API runs an event loop in this thread while it lives, which would break
    every later test that calls asyncio.run(). The test's own ORM calls stay plain sync code meanwhile, hence
    DJANGO_ALLOW_ASYNC_UNSAFE — set only while the browser lives, so gateway subprocesses never inherit it."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); "
                    "the browser tests never skip")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)  # every wait is bounded
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    yield page
    context.close()


@pytest.fixture
def shoot():
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name: str, full_page: bool = False) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)

    return take
