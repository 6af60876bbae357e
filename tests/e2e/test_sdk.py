"""The Python SDK (clients/python) against the real platform through :8080: tokens from the
real Keycloak by each of its three ways, the HTTP API and its errors as exceptions, a
rate limit honoured by its Retry-After, and a WebSocket subscription that survives a
gateway restart."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from html import unescape

import httpx
import pytest

from gatehouse_client import (
    AuthorChange,
    AuthorizationRequest,
    Conflict,
    GatehouseClient,
    GatehouseSocket,
    KeycloakTokens,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RateLimitExceeded,
    Resync,
    authorization_request,
)
from gatehouse_client.errors import AuthenticationFailed
from gatehouse_protos.authors.v1 import authors_pb2
from tests.e2e.conftest import (
    authors_service,
    client_address,
    create_through_authors,
    gateways_stopped,
)
from tests.harness.backends import REPO
from tests.harness.stack import CLIENT_ID, Stack, dev_password

SERVICE_CLIENT = "gatehouse-service"
SERVICE_SECRET = "gatehouse-service-dev-secret"  # development only (docs/operations.md)
CONSOLE_CLIENT = "gatehouse-console"
# Far above what a busy two-core machine needs; every wait below is bounded by these.
CHANGE_WITHIN_SECONDS = 20.0
RECONNECT_WITHIN_SECONDS = 90.0


@pytest.fixture
async def editor(stack: Stack) -> AsyncIterator[KeycloakTokens]:
    tokens = KeycloakTokens.password(stack.issuer, CLIENT_ID, "editor", dev_password("editor"))
    yield tokens
    await tokens.aclose()


@pytest.fixture
async def service(stack: Stack) -> AsyncIterator[KeycloakTokens]:
    tokens = KeycloakTokens.client_credentials(stack.issuer, SERVICE_CLIENT, SERVICE_SECRET)
    yield tokens
    await tokens.aclose()


def platform(stack: Stack, tokens: KeycloakTokens, max_retries: int = 3) -> GatehouseClient:
    """A client of the platform as one client address of its own."""
    return GatehouseClient(
        stack.web_url,
        tokens,
        headers={"X-Forwarded-For": client_address()},
        max_retries=max_retries,
    )


async def test_an_editor_script_creates_reads_changes_and_deletes_an_author(
    stack: Stack, editor: KeycloakTokens
) -> None:
    name = f"sdk-{uuid.uuid4()}"
    async with platform(stack, editor) as client:
        created = await client.create_author(name)
        assert created.name == name
        assert created.etag
        read = await client.get_author(created.id)
        assert read.etag == created.etag
        with pytest.raises(Conflict):
            await client.create_author(name)
        renamed = await client.update_author(created.id, name + "-2", if_match=read.etag)
        with pytest.raises(PreconditionFailed):
            await client.update_author(created.id, name + "-3", if_match=read.etag)
        assert [a.id for a in await client.list_authors(name=name + "-2")] == [created.id]
        page = await client.authors_page(search=name, per_page=5)
        assert [a.name for a in page.items] == [renamed.name]
        assert [a.id async for a in client.iter_authors(search=name, per_page=1)] == [created.id]
        await client.delete_author(created.id, if_match=renamed.etag)
        with pytest.raises(NotFound) as missing:
            await client.get_author(created.id)
    assert missing.value.status == 404
    assert missing.value.request_id


async def test_a_service_reads_with_its_client_credentials_and_may_not_write(
    stack: Stack, service: KeycloakTokens
) -> None:
    async with platform(stack, service) as client:
        assert isinstance(await client.list_authors(id=1), list)
        with pytest.raises(PermissionDenied) as refused:
            await client.create_author(f"sdk-service-{uuid.uuid4()}")
    assert refused.value.details == {"required_role": "create-author"}


def run_example(stack: Stack, name: str, *args: str, **env: str) -> str:
    """One of clients/python/examples run as a program against the stack; its output."""
    done = subprocess.run(
        [sys.executable, str(REPO / "clients/python/examples" / name), *args],
        env={**os.environ, "GATEHOUSE_URL": stack.web_url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_examples_run_against_the_platform(stack: Stack, editor: KeycloakTokens) -> None:
    name = f"sdk-example-{uuid.uuid4()}"
    async with platform(stack, editor) as client:
        created = await client.create_author(name)
        listed = await asyncio.to_thread(run_example, stack, "list_authors.py", name)
        await client.delete_author(created.id)
    assert listed == f"{created.id}\t{name}\n"
    read = await asyncio.to_thread(
        run_example, stack, "service_reader.py", GATEHOUSE_CLIENT_SECRET=SERVICE_SECRET
    )
    assert "writing is refused: {'required_role': 'create-author'}" in read


class Counted:
    """A token provider that counts the tokens it gave (for the socket's refresh)."""

    def __init__(self, tokens: KeycloakTokens) -> None:
        self.tokens = tokens
        self.given: list[str] = []
        self.renewed = asyncio.Event()

    async def token(self) -> str:
        self.given.append(await self.tokens.token())
        if len(self.given) > 1:
            self.renewed.set()
        return self.given[-1]

    def invalidate(self) -> None:
        self.tokens.invalidate()


async def test_tokens_are_refreshed_and_an_open_socket_takes_the_new_one(
    stack: Stack,
) -> None:
    now = [time.monotonic()]
    viewer = KeycloakTokens.password(
        stack.issuer, CLIENT_ID, "viewer", dev_password("viewer"), clock=lambda: now[0]
    )
    first = await viewer.token()
    now[0] += 280  # 20 s left: under the margin, so the refresh token is used
    second = await viewer.token()
    assert second != first
    async with platform(stack, viewer) as client:
        assert isinstance(await client.list_authors(id=1), list)
    # A socket whose token is renewed within a second (a margin of all but a second of
    # the token's life): the gateway takes the auth frame, so the socket stays the same
    # one and answers.
    counted = Counted(viewer)
    async with GatehouseSocket(stack.web_url, counted, refresh_margin=299) as socket:
        await asyncio.wait_for(counted.renewed.wait(), CHANGE_WITHIN_SECONDS)
        assert counted.given[1] != counted.given[0]
        assert isinstance(await socket.list_authors(id=1), list)
        assert socket.connections == 1
    await viewer.aclose()


async def test_a_wrong_secret_or_password_is_authentication_failed(stack: Stack) -> None:
    wrong = KeycloakTokens.client_credentials(stack.issuer, SERVICE_CLIENT, "not-the-secret")
    with pytest.raises(AuthenticationFailed):
        await wrong.token()
    await wrong.aclose()
    wrong = KeycloakTokens.password(stack.issuer, CLIENT_ID, "viewer", "not-the-password")
    with pytest.raises(AuthenticationFailed):
        await wrong.token()
    await wrong.aclose()


async def sign_in(stack: Stack, request: AuthorizationRequest, username: str, password: str) -> str:
    """What a person does in the browser: Keycloak's login form, filled in; the URL the
    browser is sent back to."""
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(request.url)
        assert page.status_code == 200, page.text[:500]
        found = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
        assert found is not None, page.text[:500]
        # Keycloak's session cookies are Secure: a browser sends them to localhost over
        # plain HTTP (a secure context), httpx does not, so they are sent here by hand.
        cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
        answer = await browser.post(
            unescape(found.group(1)),
            data={"username": username, "password": password},
            headers={"Cookie": cookies},
        )
    assert answer.status_code == 302, answer.text[:500]
    return answer.headers["location"]


async def test_the_browser_flow_signs_in_with_pkce_on_the_console_client(stack: Stack) -> None:
    redirect = f"{stack.web_url}/console/"
    request = authorization_request(stack.issuer, CONSOLE_CLIENT, redirect)
    callback = await sign_in(stack, request, "editor", dev_password("editor"))
    assert callback.startswith(redirect + "?")
    tokens = await KeycloakTokens.from_authorization_code(
        stack.issuer, CONSOLE_CLIENT, request, callback
    )
    async with platform(stack, tokens) as client:
        created = await client.create_author(f"sdk-console-{uuid.uuid4()}")
        await client.delete_author(created.id)
    await tokens.aclose()


async def test_the_console_client_takes_only_its_exact_redirect(stack: Stack) -> None:
    request = authorization_request(stack.issuer, CONSOLE_CLIENT, f"{stack.web_url}/console/x")
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(request.url)
    assert page.status_code == 400
    assert "Invalid parameter: redirect_uri" in page.text


async def test_a_rate_limit_is_waited_out_as_retry_after_says(
    stack: Stack, service: KeycloakTokens
) -> None:
    # The service account is a user of its own: spending its per-user limit (100 a
    # minute) disturbs no other test.
    async with platform(stack, service, max_retries=0) as impatient:
        refusal: RateLimitExceeded | None = None
        for _ in range(300):
            try:
                await impatient.list_authors(id=1)
            except RateLimitExceeded as refused:
                refusal = refused
                break
    assert refusal is not None, "no 429 after 300 requests"
    assert refusal.retry_after is not None
    assert refusal.retry_after >= 1
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(seconds)

    # The same calls with retries: whether the window frees a slot before it or not,
    # the limit is met again within 300 calls, and then the call waits and is admitted.
    async with GatehouseClient(
        stack.web_url, service, max_retries=3, max_retry_wait=70, sleep=sleep
    ) as patient:
        for _ in range(300):
            assert isinstance(await patient.list_authors(id=1), list)
            if waited:
                break
    assert waited, "no call had to wait in 300"
    # A wait of Retry-After's whole seconds (a busy upstream's 503 may add a backoff's
    # fraction of a second).
    assert any(wait >= 1 and wait == int(wait) for wait in waited), waited


async def next_author_change(socket: GatehouseSocket) -> AuthorChange:
    """The next change, past any Resync."""
    while True:
        change = await socket.next_change(CHANGE_WITHIN_SECONDS)
        if isinstance(change, AuthorChange):
            return change


async def test_a_subscriber_receives_every_change_in_order(
    stack: Stack, editor: KeycloakTokens, service: KeycloakTokens
) -> None:
    async with (
        GatehouseSocket(stack.web_url, service) as socket,
        platform(stack, editor) as client,
    ):
        await socket.subscribe()
        created = await client.create_author(f"sdk-watch-{uuid.uuid4()}")
        await client.update_author(created.id, created.name + "-2")
        await client.delete_author(created.id)
        seen: list[tuple[str, str]] = []
        while len(seen) < 3:
            change = await next_author_change(socket)
            if change.author.id == created.id:
                seen.append((change.kind, change.author.name))
    assert seen == [
        ("created", created.name),
        ("updated", created.name + "-2"),
        ("deleted", created.name + "-2"),
    ]


async def test_a_subscription_recovers_every_change_made_while_no_gateway_ran(
    native_stack: Stack, service: KeycloakTokens
) -> None:
    stack = native_stack
    prefix = f"sdk-recover-{uuid.uuid4().hex[:8]}-"
    created: list[int] = []
    received: list[int] = []
    resyncs: list[Resync] = []
    # Changes are made straight through the authors service, so that they are made while
    # no gateway replica runs as well as before and after.
    async with (
        GatehouseSocket(stack.web_url, service) as socket,
        authors_service(stack) as authors,
    ):
        await socket.subscribe()
        first = socket.connections
        created.append(await create_through_authors(authors, f"{prefix}000"))
        # The socket drops and cannot come back until a replica runs again.
        async with gateways_stopped(stack):
            for n in range(1, 11):
                created.append(await create_through_authors(authors, f"{prefix}{n:03d}"))
        for n in range(11, 16):
            created.append(await create_through_authors(authors, f"{prefix}{n:03d}"))
        try:
            async with asyncio.timeout(RECONNECT_WITHIN_SECONDS):
                while len(received) < len(created):
                    change = await socket.next_change(RECONNECT_WITHIN_SECONDS)
                    if isinstance(change, Resync):
                        resyncs.append(change)
                    elif change.author.name.startswith(prefix):
                        received.append(change.author.id)
        finally:
            for author_id in created:
                await authors.DeleteAuthor(
                    authors_pb2.DeleteAuthorRequest(id=author_id), timeout=10
                )
    assert socket.connections > first, "the socket was never replaced"
    assert resyncs == []
    # Exactly the changes made, in the order they were committed: none lost, none twice.
    assert received == created
