"""Debian's Chromium driven by Playwright, headless, with a profile of its own; every
request it sends beyond this machine is noted (the `browser` fixture of conftest.py)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Request, Route, async_playwright

# Debian's chromium package (scripts/bootstrap.sh installs it); no browser is downloaded.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass
class Browser:
    """A browser context, and the requests it tried to send beyond this machine."""

    context: BrowserContext
    outside: list[str] = field(default_factory=list)

    def notice(self, request: Request) -> None:
        if urlsplit(request.url).hostname not in LOOPBACK:
            self.outside.append(request.url)

    async def loopback_only(self, route: Route) -> None:
        """Let requests to this machine through and abort any other (a page's route:
        intercepted requests skip the browser's own CORS preflight, so the CORS tests
        only watch)."""
        if urlsplit(route.request.url).hostname in LOOPBACK:
            await route.continue_()
        else:
            await route.abort("blockedbyclient")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Chromium with a fresh profile, whose every request beyond loopback is noted."""
    with tempfile.TemporaryDirectory(prefix="gatehouse-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            browser = Browser(context)
            context.on("request", browser.notice)
            try:
                yield browser
            finally:
                await context.close()


@dataclass
class Watched:
    """A page, and what it said of security-policy violations and script errors."""

    page: Page
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def watched_page(browser: Browser) -> Watched:
    """A new page whose policy violations (console) and uncaught errors are kept."""
    page = await browser.context.new_page()
    watched = Watched(page)
    page.on(
        "console",
        lambda message: (
            watched.violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    return watched
