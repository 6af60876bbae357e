"""What a real browser makes of the platform: Debian's Chromium, driven by Playwright,
headless, with a profile of its own; every request it sends beyond this machine is noted
(the docs page's are aborted too).

A page served on one loopback origin calls the API on :8080 cross-origin with the
browser's own `fetch`: from an origin the development profile allows, the preflight
passes and the script reads the answer and its exposed headers; from any other, the
browser refuses before the request is sent. The interactive docs at /docs render with
nothing fetched from anywhere but the platform, and break none of their security policy.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page

from tests.e2e.browser import Browser, watched_page
from tests.e2e.conftest import DEV_ORIGIN, Tokens
from tests.harness.private import free_port
from tests.harness.stack import Stack

PAGE = b"<!DOCTYPE html><html><head><title>front-end</title></head><body></body></html>"


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what the browser saw."""


@contextlib.contextmanager
def front_end(port: int) -> Iterator[str]:
    """An empty page served at http://127.0.0.1:<port>/: an origin to call from."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def allowed_origin() -> Iterator[str]:
    port = urlsplit(DEV_ORIGIN).port
    assert port is not None
    with front_end(port) as origin:
        assert origin == DEV_ORIGIN
        yield origin


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    with front_end(free_port()) as origin:
        yield origin


async def opened(browser: Browser, url: str) -> Page:
    page = await browser.context.new_page()
    response = await page.goto(url)
    assert response is not None
    assert response.ok
    return page


# Runs in the page: a fetch of the API, and what the script may read of its answer.
FETCH = """async ([url, method, headers, body]) => {
  try {
    const response = await fetch(url, {method, headers, body});
    const names = ["RateLimit", "RateLimit-Policy", "X-RateLimit-Remaining", "X-Request-ID",
                   "Location", "ETag"];
    const read = {};
    for (const name of names) read[name] = response.headers.get(name);
    return {status: response.status, headers: read, body: await response.text()};
  } catch (error) {
    return {error: String(error)};
  }
}"""


async def call(
    page: Page, url: str, method: str, headers: dict[str, str], body: str | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = await page.evaluate(FETCH, [url, method, headers, body])
    return answer


async def create_author(
    page: Page, stack: Stack, headers: dict[str, str], name: str
) -> dict[str, Any]:
    """POST /authors from the page's origin, as its script would."""
    return await call(
        page,
        f"{stack.web_url}/authors",
        "POST",
        {**headers, "Content-Type": "application/json"},
        f'{{"name": "{name}"}}',
    )


async def test_an_allowed_origin_calls_the_api_and_reads_its_headers(
    stack: Stack, tokens: Tokens, browser: Browser, allowed_origin: str
) -> None:
    page = await opened(browser, allowed_origin + "/")
    editor = await tokens.headers("editor")
    name = f"browser-{uuid.uuid4()}"
    created = await create_author(page, stack, editor, name)
    assert created.get("status") == 201, created
    headers = created["headers"]
    assert headers["Location"].startswith("/authors/")
    assert headers["ETag"]
    assert headers["X-Request-ID"]
    assert headers["RateLimit-Policy"].startswith('"http_per_user";q=')
    assert headers["RateLimit"].startswith('"http_per_user";r=')
    assert headers["X-RateLimit-Remaining"] is not None
    read = await call(page, f"{stack.web_url}{headers['Location']}", "GET", editor)
    assert read["status"] == 200, read
    assert name in read["body"]
    deleted = await call(page, f"{stack.web_url}{headers['Location']}", "DELETE", editor)
    assert deleted["status"] == 204, deleted
    assert browser.outside == []


async def test_any_other_origin_is_refused_by_the_browser_before_the_request(
    stack: Stack, tokens: Tokens, browser: Browser, other_origin: str
) -> None:
    page = await opened(browser, other_origin + "/")
    editor = await tokens.headers("editor")
    name = f"browser-refused-{uuid.uuid4()}"
    created = await create_author(page, stack, editor, name)
    assert "Failed to fetch" in created.get("error", ""), created
    read = await call(page, f"{stack.web_url}/authors?id=1", "GET", editor)
    assert "Failed to fetch" in read.get("error", ""), read
    # The write never left the browser: its preflight was refused.
    async with httpx.AsyncClient(base_url=stack.web_url, timeout=20) as web:
        found = await web.get("/authors", params={"name": name}, headers=editor)
    assert found.status_code == 200
    assert found.json() == []


async def test_the_docs_render_from_the_platform_alone(stack: Stack, browser: Browser) -> None:
    watched = await watched_page(browser)
    page = watched.page
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    # The network ends at this machine: nothing else could serve the page.
    await page.route("**/*", browser.loopback_only)
    response = await page.goto(f"{stack.web_url}/docs")
    assert response is not None
    assert response.ok
    title = page.locator(".swagger-ui .info .title")
    await title.wait_for(timeout=20_000)
    assert "Gatehouse" in await title.inner_text()
    operations = page.locator(".swagger-ui .opblock")
    await operations.first.wait_for(timeout=20_000)
    assert await operations.count() >= 9
    assert browser.outside == []
    assert failed == []
    assert watched.violations == []
    assert watched.errors == []
