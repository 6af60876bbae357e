"""The HTTP API of docs/api.md: authors and audit logs, with tokens, retries and errors.

- Every call carries `Authorization: Bearer` from the token provider; a 401 makes the
  provider forget its token and the call is made once more with a fresh one.
- 429 is retried after the `Retry-After` the platform sent (any method: a refused
  request was not acted on), up to `max_retries` times and only when the wait is at most
  `max_retry_wait` seconds; then `RateLimitExceeded` is raised.
- 503 and 504, and a connection that could not be made or broke, are retried for
  idempotent methods only (GET, PUT, DELETE), after `Retry-After` or a jittered backoff.
- Any other status of 400 or more raises the exception of its error code (errors.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from gatehouse_client.backoff import Backoff
from gatehouse_client.errors import GatehouseError, ServiceUnavailable, from_error_object
from gatehouse_client.models import Author, Page, PageMeta
from gatehouse_client.tokens import TokenProvider

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRIED_WHEN_IDEMPOTENT = frozenset({503, 504})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_of(response: httpx.Response) -> GatehouseError:
    """The exception for an error answer (status of 400 or more)."""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        # 431 from the edge, or a proxy's own page: plain text, no error object.
        text = response.text.strip()[:200] or response.reason_phrase
        return GatehouseError(text, status=response.status_code, request_id=request_id)
    error = body.get("error") if isinstance(body, dict) else None
    return from_error_object(error, status=response.status_code, request_id=request_id)


class GatehouseClient:
    """An asynchronous client of the platform at `base_url` (e.g. `http://localhost:8080`).

    Use it as `async with GatehouseClient(url, tokens) as client: ...`.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        timeout: float = 20.0,
        headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            headers=dict(headers or {}),
            transport=transport,
        )

    async def __aenter__(self) -> GatehouseClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call with the retries of the module docstring; the answer when below 400."""
        method = method.upper()
        query = {k: v for k, v in (params or {}).items() if v is not None}
        retries = 0
        refreshed = False
        # Each call's own backoff: concurrent calls do not lengthen each other's waits.
        backoff = dataclasses.replace(self._backoff, attempt=0)
        while True:
            token = await self.tokens.token()
            sent = {**(headers or {}), "Authorization": f"Bearer {token}"}
            try:
                response = await self._http.request(
                    method, path, params=query, json=json, headers=sent
                )
            except httpx.TransportError as error:
                if method in IDEMPOTENT and retries < self.max_retries:
                    retries += 1
                    await self._sleep(backoff.next_delay())
                    continue
                raise ServiceUnavailable(f"the platform could not be reached: {error!r}") from None
            status = response.status_code
            if status == 401 and not refreshed:
                refreshed = True
                self.tokens.invalidate()
                continue
            if retries < self.max_retries and (
                status == 429 or (status in RETRIED_WHEN_IDEMPOTENT and method in IDEMPOTENT)
            ):
                wait = retry_after_seconds(response.headers.get("retry-after"))
                if wait is None:
                    wait = backoff.next_delay()
                if wait <= self.max_retry_wait:
                    retries += 1
                    await self._sleep(wait)
                    continue
            if status >= 400:
                raise error_of(response)
            return response

    async def health(self) -> dict[str, Any]:
        """`GET /health`: every dependency's state (public: no token is sent)."""
        response = await self._http.get("/health")
        body: dict[str, Any] = response.json()
        return body

    async def list_authors(
        self, *, id: int | None = None, name: str | None = None, search: str | None = None
    ) -> list[Author]:
        """`GET /authors`: at most 1,000, ordered by id."""
        response = await self.request(
            "GET", "/authors", params={"id": id, "name": name, "search": search}
        )
        return [Author.from_json(item) for item in response.json()]

    async def authors_page(
        self,
        *,
        page: int | None = None,
        per_page: int | None = None,
        cursor: str | None = None,
        name: str | None = None,
        search: str | None = None,
    ) -> Page[Author]:
        """`GET /authors/paginated`: by page number, or by `cursor` (`meta.next_cursor`)."""
        response = await self.request(
            "GET",
            "/authors/paginated",
            params={
                "page": page,
                "per_page": per_page,
                "cursor": cursor,
                "name": name,
                "search": search,
            },
        )
        body = response.json()
        return Page([Author.from_json(i) for i in body["items"]], PageMeta.from_json(body["meta"]))

    async def iter_authors(
        self, *, per_page: int = 100, search: str | None = None
    ) -> AsyncIterator[Author]:
        """Every author, page after page by cursor (no row skipped or repeated)."""
        cursor: str | None = None
        while True:
            page = await self.authors_page(per_page=per_page, cursor=cursor, search=search)
            for author in page.items:
                yield author
            cursor = page.meta.next_cursor
            if not page.meta.has_more or cursor is None:
                return

    async def get_author(self, author_id: int) -> Author:
        """`GET /authors/{id}`, with its `etag`."""
        response = await self.request("GET", f"/authors/{author_id}")
        return Author.from_json(response.json(), response.headers.get("etag"))

    async def create_author(self, name: str) -> Author:
        """`POST /authors` (role create-author)."""
        response = await self.request("POST", "/authors", json={"name": name})
        return Author.from_json(response.json(), response.headers.get("etag"))

    async def update_author(
        self, author_id: int, name: str, *, if_match: str | None = None
    ) -> Author:
        """`PUT /authors/{id}` (role update-author); `if_match`: only at that version
        (an `etag`), else `PreconditionFailed`."""
        headers = {"If-Match": if_match} if if_match else None
        response = await self.request(
            "PUT", f"/authors/{author_id}", json={"name": name}, headers=headers
        )
        return Author.from_json(response.json(), response.headers.get("etag"))

    async def delete_author(self, author_id: int, *, if_match: str | None = None) -> None:
        """`DELETE /authors/{id}` (role delete-author)."""
        headers = {"If-Match": if_match} if if_match else None
        await self.request("DELETE", f"/authors/{author_id}", headers=headers)

    async def audit_logs(
        self,
        *,
        page: int | None = None,
        per_page: int | None = None,
        cursor: str | None = None,
        **filters: str,
    ) -> Page[dict[str, Any]]:
        """`GET /audit-logs` (role view-audit-logs), newest first; `filters` as documented
        (`user_id`, `action_type`, `outcome`, `start_date`, ...)."""
        response = await self.request(
            "GET",
            "/audit-logs",
            params={"page": page, "per_page": per_page, "cursor": cursor, **filters},
        )
        body = response.json()
        return Page(list(body["items"]), PageMeta.from_json(body["meta"]))
