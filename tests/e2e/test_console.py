"""The browser console at /console (docs/console.md) in Debian's Chromium, driven by
Playwright: a person signs in on Keycloak's own login page (authorization code with
PKCE on the realm's `gatehouse-console` client), lists and pages authors, creates,
renames and deletes them as the role allows, and watches live changes, which the page
recovers after its socket was dropped by stopped gateways. The page breaks none of its
strict security policy and asks nothing of any other machine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from gatehouse_protos.authors.v1 import authors_pb2
from tests.e2e.browser import Browser, Watched, watched_page
from tests.e2e.conftest import (
    authors_service,
    create_through_authors,
    gateways_stopped,
)
from tests.harness.stack import Stack, dev_password

# Far above what a busy two-core machine needs (Keycloak's login takes a few seconds).
SIGN_IN_MS = 45_000
SHOWN_MS = 20_000
RECONNECT_MS = 90_000


async def signed_in(browser: Browser, stack: Stack, username: str) -> Watched:
    """A console page on which `username` signed in through Keycloak's login form."""
    watched = await watched_page(browser)
    page = watched.page
    await page.goto(f"{stack.web_url}/console/")
    await page.locator("#signin").click(timeout=SIGN_IN_MS)
    # Keycloak's own page, reached by the redirect the console made.
    await page.locator("#username").fill(username, timeout=SIGN_IN_MS)
    assert page.url.startswith(f"{stack.issuer}/protocol/openid-connect/auth?")
    assert "code_challenge_method=S256" in page.url
    await page.locator("#password").fill(dev_password(username))
    await page.locator("#kc-login").click()
    await expect(page.locator("#user")).to_have_text(username, timeout=SIGN_IN_MS)
    # Back on the console, the code exchanged and gone from the address bar.
    assert page.url == f"{stack.web_url}/console/"
    return watched


@pytest.fixture
async def named(stack: Stack) -> AsyncIterator[str]:
    """A prefix of names for the test; its authors are deleted afterwards."""
    prefix = f"console-{uuid.uuid4().hex[:8]}-"
    yield prefix
    async with authors_service(stack) as authors:
        found = await authors.ListAuthors(
            authors_pb2.ListAuthorsRequest(filter=authors_pb2.AuthorFilter(search=prefix)),
            timeout=10,
        )
        for author in found.authors:
            await authors.DeleteAuthor(authors_pb2.DeleteAuthorRequest(id=author.id), timeout=10)


async def test_an_editor_signs_in_and_creates_renames_and_deletes_an_author(
    stack: Stack, browser: Browser, named: str
) -> None:
    watched = await signed_in(browser, stack, "editor")
    page = watched.page
    await expect(page.locator("#status")).to_have_text("live", timeout=SHOWN_MS)
    name = f"{named}ada"
    await page.locator("#create-name").fill(name)
    await page.locator("#create").click()
    await page.locator("#search").fill(named)
    created = page.locator("#authors tr", has_text=name)
    await expect(created).to_have_count(1, timeout=SHOWN_MS)
    author_id = await created.get_attribute("data-id")
    # The change came back over the socket too.
    await expect(
        page.locator("#changes li", has_text=f"created #{author_id} {name}")
    ).to_have_count(1, timeout=SHOWN_MS)
    # The row by its id: while it is renamed its name is an input's value, not text.
    editing = page.locator(f'#authors tr[data-id="{author_id}"]')
    await editing.locator("button.rename").click()
    await editing.locator("input.rename-input").fill(f"{name}-king")
    await editing.locator("button.save").click()
    renamed = page.locator("#authors tr", has_text=f"{name}-king")
    await expect(renamed).to_have_count(1, timeout=SHOWN_MS)
    await renamed.locator("button.delete").click()
    await expect(page.locator("#authors tr")).to_have_count(0, timeout=SHOWN_MS)
    await expect(
        page.locator("#changes li", has_text=f"deleted #{author_id} {name}-king")
    ).to_have_count(1, timeout=SHOWN_MS)
    assert watched.violations == []
    assert watched.errors == []
    assert browser.outside == []


async def test_a_viewer_pages_through_authors_and_may_not_change_them(
    stack: Stack, browser: Browser, named: str
) -> None:
    async with authors_service(stack) as authors:
        for n in range(12):
            await create_through_authors(authors, f"{named}{n:02d}")
    watched = await signed_in(browser, stack, "viewer")
    page = watched.page
    await expect(page.locator("#roles")).to_contain_text("get-authors")
    await expect(page.locator("#creator")).to_be_hidden()
    await page.locator("#search").fill(named)
    await expect(page.locator("#page-info")).to_have_text(
        "page 1 of 2 (12 authors)", timeout=SHOWN_MS
    )
    await expect(page.locator("#authors tr")).to_have_count(10)
    await expect(page.locator("#authors button")).to_have_count(0)
    await page.locator("#next").click()
    await expect(page.locator("#page-info")).to_have_text("page 2 of 2 (12 authors)")
    await expect(page.locator("#authors tr")).to_have_count(2)
    await expect(page.locator("#next")).to_be_disabled()
    # Signing out ends the Keycloak session: back on the console, signed out, and the
    # next sign-in asks for the password again.
    await page.locator("#signout").click()
    await expect(page.locator("#signin")).to_be_visible(timeout=SIGN_IN_MS)
    assert page.url.startswith(f"{stack.web_url}/console/")
    await expect(page.locator("#app")).to_be_hidden()
    await page.locator("#signin").click()
    await expect(page.locator("#password")).to_be_visible(timeout=SIGN_IN_MS)
    assert watched.violations == []
    assert watched.errors == []
    assert browser.outside == []


async def test_live_changes_missed_while_no_gateway_ran_are_recovered_in_order(
    native_stack: Stack, browser: Browser, named: str
) -> None:
    stack = native_stack
    watched = await signed_in(browser, stack, "viewer")
    page = watched.page
    status = page.locator("#status")
    await expect(status).to_have_text("live", timeout=SHOWN_MS)
    names = [f"{named}{n:02d}" for n in range(5)]
    ids: list[int] = []
    async with authors_service(stack) as authors, gateways_stopped(stack):
        await expect(status).not_to_have_text("live", timeout=RECONNECT_MS)
        for name in names:
            ids.append(await create_through_authors(authors, name))
    await expect(status).to_have_text("live", timeout=RECONNECT_MS)
    ours = page.locator("#changes li", has_text=named)
    await expect(ours).to_have_count(len(names), timeout=SHOWN_MS)
    # Newest first: the changes in the order they were made, each once.
    shown = await ours.all_inner_texts()
    assert shown == [f"created #{i} {n}" for i, n in reversed(list(zip(ids, names, strict=True)))]
    await expect(page.locator("#changes li", has_text="history gap")).to_have_count(0)
    await page.locator("#search").fill(named)
    await expect(page.locator("#authors tr")).to_have_count(len(names), timeout=SHOWN_MS)
    assert watched.violations == []
    assert watched.errors == []
    assert browser.outside == []
