"""The WebSocket `/web` of docs/websocket.md (JSON format), kept connected.

`GatehouseSocket` holds one socket at a time and replaces it when it drops:

- authentication by the upgrade's `Authorization` header; before the token expires an
  auth frame with a fresh one is sent (the gateway closes 4001 at `exp` otherwise);
- a dropped socket (gateway restart 1001, network failure, 1011, 1012, 1013, an upgrade
  refused with 502/503) is replaced after a jittered exponential backoff; a socket
  refused twice in a row at authentication (4001, 4002) or at the upgrade (400, 403)
  ends the client with `ConnectionLost`;
- requests are matched to their answers by `req_id`; an error answer raises the
  exception of its code (errors.py); a request in flight when the socket drops raises
  `ServiceUnavailable` (it is not sent again: it may have been acted on), and so does a
  request made while no socket can be opened for `request_timeout` seconds;
- after `subscribe()`, every new socket subscribes again, and `changes()` yields the
  broadcasts as `AuthorChange`s. The subscription is recoverable (docs/websocket.md,
  Recovery by offset): the client keeps the offset of the last change it received and
  a new socket subscribes from there, so the changes made while no socket was open
  arrive first, in order, with no gap and no duplicate. Only when that cannot be (the
  offset is older than the retained history, the gateway lost continuity, or the
  subscription is live-only) `changes()` yields a `Resync`: reload what you show then;
  every change after it is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gatehouse_client.backoff import Backoff
from gatehouse_client.errors import (
    ConnectionLost,
    GatehouseError,
    InternalError,
    ServiceUnavailable,
    from_error_object,
)
from gatehouse_client.models import Author, Page, PageMeta
from gatehouse_client.tokens import TokenProvider

GET_AUTHORS, GET_PAGINATED_AUTHORS, CREATE_AUTHOR = 1, 2, 3
UPDATE_AUTHOR, DELETE_AUTHOR, GET_AUTHOR = 4, 5, 6
SUBSCRIBE_AUTHORS, UNSUBSCRIBE_AUTHORS = 10, 11
AUTHOR_CREATED, AUTHOR_UPDATED, AUTHOR_DELETED = 100, 101, 102
HISTORY_GAP = 103
BROADCAST_REQ_ID = "00000000-0000-0000-0000-000000000000"
CHANGE_KINDS = {AUTHOR_CREATED: "created", AUTHOR_UPDATED: "updated", AUTHOR_DELETED: "deleted"}
# Close codes after which a new socket would be refused the same way.
AUTH_CLOSE_CODES = frozenset({4001, 4002})
# Upgrade refusals that a retry cannot cure (bad format, origin not allowed).
FINAL_UPGRADE_STATUSES = frozenset({400, 403})
# Refresh the socket's token this long before it expires.
DEFAULT_REFRESH_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class AuthorChange:
    """A broadcast: `kind` is `created`, `updated` or `deleted`; `author` as after the
    change (as it was, for `deleted`); `offset` its place in the change stream (None on
    a live-only subscription)."""

    kind: str
    author: Author
    offset: str | None = None


@dataclass(frozen=True)
class Resync:
    """Changes may have been missed (the socket was replaced): reload, then read on."""

    reason: str


Change = AuthorChange | Resync


def ws_url(base_url: str, fmt: str = "json") -> str:
    """`ws(s)://host/web?format=…` beside an `http(s)://host` base URL."""
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/web?format={fmt}"


def _offset_key(offset: str) -> tuple[int, int]:
    """An offset `<milliseconds>-<sequence>` as what it is compared by."""
    milliseconds, _, sequence = offset.partition("-")
    return int(milliseconds), int(sequence or 0)


def newer(offset: str, than: str | None) -> bool:
    """Whether `offset` comes after `than` in the change stream (anything is after None)."""
    return than is None or not than or _offset_key(offset) > _offset_key(than)


def _close_of(error: ConnectionClosed) -> tuple[int | None, str]:
    close = error.rcvd
    return (close.code, close.reason) if close is not None else (None, "connection dropped")


class GatehouseSocket:
    """A kept-up socket to the platform at `base_url` (e.g. `http://localhost:8080`);
    use as `async with GatehouseSocket(url, tokens) as socket: ...`."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        backoff: Backoff | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 20.0,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN_SECONDS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = ws_url(base_url)
        self.tokens = tokens
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.refresh_margin = refresh_margin
        self.headers = dict(headers or {})
        self.connections = 0
        self._socket: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # Changes, or the error that ended the client, or None once it was closed.
        self._changes: asyncio.Queue[Change | GatehouseError | None] = asyncio.Queue()
        self._subscribed = False
        self._recoverable = True
        self._offset: str | None = None
        # SUBSCRIBE_AUTHORS requests awaiting their answer: whether each is a resubscribe.
        self._subscribing: dict[str, bool] = {}
        self._failure: GatehouseError | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GatehouseSocket:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the first socket (retrying as after a drop) and keep one open until closed."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="gatehouse-socket")
        await self._wait_ready()

    async def aclose(self) -> None:
        """Close the socket and stop reconnecting."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self._fail_pending(ServiceUnavailable("the client was closed"))
        self._changes.put_nowait(None)

    @property
    def connected(self) -> bool:
        """True while an authenticated socket is open."""
        return self._ready.is_set()

    async def drop(self) -> None:
        """Close the current socket as a network failure would (it is replaced at once)."""
        if self._socket is not None:
            await self._socket.close(1000, "dropped by the client")

    @property
    def offset(self) -> str | None:
        """The offset of the last change received (keep it to resume in another process:
        `subscribe(offset=...)`)."""
        return self._offset

    async def request(self, pkg_id: int, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; its answer frame (`status_code` 0), else its exception."""
        return await self._exchange(pkg_id, data, resubscribe=False)

    async def _exchange(
        self, pkg_id: int, data: Mapping[str, Any] | None, *, resubscribe: bool
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.request_timeout):
                await self._wait_ready()
        except TimeoutError:
            raise ServiceUnavailable("no socket could be opened in time") from None
        socket = self._socket
        assert socket is not None
        req_id = str(uuid.uuid4())
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = answer
        if pkg_id == SUBSCRIBE_AUTHORS:
            self._subscribing[req_id] = resubscribe
        try:
            await socket.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data or {}}))
            async with asyncio.timeout(self.request_timeout):
                frame = await answer
        except ConnectionClosed:
            raise ServiceUnavailable("the socket closed before the answer") from None
        except TimeoutError:
            raise ServiceUnavailable("no answer in time") from None
        finally:
            self._pending.pop(req_id, None)
            self._subscribing.pop(req_id, None)
        status = frame.get("status_code")
        if status == 0:
            return frame
        error = frame.get("data")
        if isinstance(error, dict) and "code" in error:
            raise from_error_object(error)
        raise InternalError(f"status_code {status}")

    async def get_author(self, author_id: int) -> Author:
        return Author.from_json((await self.request(GET_AUTHOR, {"id": author_id}))["data"])

    async def list_authors(self, **filters: Any) -> list[Author]:
        frame = await self.request(GET_AUTHORS, filters)
        return [Author.from_json(item) for item in frame["data"]]

    async def authors_page(self, **query: Any) -> Page[Author]:
        """GET_PAGINATED_AUTHORS: filters and `page`/`per_page` or `cursor` (`""` starts)."""
        frame = await self.request(GET_PAGINATED_AUTHORS, query)
        return Page(
            [Author.from_json(item) for item in frame["data"]], PageMeta.from_json(frame["meta"])
        )

    async def create_author(self, name: str) -> Author:
        return Author.from_json((await self.request(CREATE_AUTHOR, {"name": name}))["data"])

    async def update_author(self, author_id: int, name: str) -> Author:
        frame = await self.request(UPDATE_AUTHOR, {"id": author_id, "name": name})
        return Author.from_json(frame["data"])

    async def delete_author(self, author_id: int) -> None:
        await self.request(DELETE_AUTHOR, {"id": author_id})

    async def subscribe(self, offset: str | None = None, *, recoverable: bool = True) -> None:
        """Receive every author change, on this socket and every later one: from now on,
        or from `offset` (the `offset` of a change received earlier, even by another
        process). `recoverable=False` asks for the live-only subscription of clients
        that never recover (then every new socket starts with a `Resync`)."""
        self._recoverable = recoverable
        if offset is not None:
            self._offset = offset
        await self.request(SUBSCRIBE_AUTHORS, self._subscription())
        self._subscribed = True

    def _subscription(self) -> dict[str, str]:
        return {"offset": self._offset or ""} if self._recoverable else {}

    async def unsubscribe(self) -> None:
        self._subscribed = False
        await self.request(UNSUBSCRIBE_AUTHORS)

    async def changes(self) -> AsyncIterator[Change]:
        """The changes after `subscribe()`, in the order the socket delivered them; ends
        when the client is closed, raises `ConnectionLost` when it gives up."""
        while True:
            item = await self._changes.get()
            if item is None:
                self._changes.put_nowait(None)  # for any other reader too
                return
            if isinstance(item, GatehouseError):
                raise item
            yield item

    async def next_change(self, within: float) -> Change:
        """The next change, waiting at most `within` seconds (else TimeoutError)."""
        async with asyncio.timeout(within):
            item = await self._changes.get()
        if item is None:
            self._changes.put_nowait(None)
            raise ConnectionLost("the client was closed", close_code=None)
        if isinstance(item, GatehouseError):
            raise item
        return item

    async def _wait_ready(self) -> None:
        while not self._ready.is_set():
            if self._failure is not None:
                raise self._failure
            waiter = asyncio.create_task(self._ready.wait())
            runner = self._runner
            assert runner is not None
            await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if runner.done() and self._failure is None:
                raise ServiceUnavailable("the socket is closed")
        if self._failure is not None:
            raise self._failure

    async def _run(self) -> None:
        refused = 0
        try:
            while True:
                opened = self.connections
                try:
                    await self._session()
                except _Refused as refusal:
                    refused = 1 if self.connections > opened else refused + 1
                    if refused >= 2:
                        raise refusal.error from None
                    self.tokens.invalidate()
                except (OSError, TimeoutError, ValueError, InvalidHandshake, ConnectionClosed):
                    if self.connections > opened:
                        refused = 0
                await asyncio.sleep(self.backoff.next_delay())
        except GatehouseError as error:
            self._failure = error
            self._fail_pending(error)
            self._changes.put_nowait(error)
        finally:
            self._ready.clear()

    async def _session(self) -> None:
        """One socket, from its upgrade to its close."""
        token = await self.tokens.token()
        headers = {**self.headers, "Authorization": f"Bearer {token}"}
        try:
            socket = await connect(
                self.url, additional_headers=headers, open_timeout=self.connect_timeout
            )
        except InvalidStatus as error:
            status = error.response.status_code
            if status in FINAL_UPGRADE_STATUSES:
                refused = ConnectionLost(f"upgrade refused: {status}", close_code=None)
                raise _Refused(refused) from None
            raise
        refresher: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                first = json.loads(await socket.recv())
            if first.get("type") != "auth_ok":
                raise ConnectionLost("no auth_ok from the server", close_code=None)
            self._socket = socket
            self.connections += 1
            if not self._subscribed:
                self.backoff.reset()
            refresher = asyncio.create_task(self._refresh(socket, float(first["expires_at"])))
            reader = asyncio.create_task(self._read(socket))
            self._ready.set()
            if self._subscribed:
                await self._resubscribe()
            await reader
        except ConnectionClosed as closed:
            code, reason = _close_of(closed)
            if code in AUTH_CLOSE_CODES and reason != "token expired":
                raise _Refused(ConnectionLost(reason, close_code=code)) from None
            raise
        finally:
            self._ready.clear()
            self._socket = None
            if refresher is not None:
                refresher.cancel()
            self._fail_pending(ServiceUnavailable("the socket closed before the answer"))
            await socket.close()

    async def _resubscribe(self) -> None:
        """Subscribe the new socket from the last offset received."""
        try:
            await self._exchange(SUBSCRIBE_AUTHORS, self._subscription(), resubscribe=True)
        except ServiceUnavailable:
            # The socket dropped, or the gateway cannot read the history now (status 7):
            # a new socket, after the backoff, tries again.
            if self._socket is not None:
                await self._socket.close(1000, "resubscribe failed")
            return
        except GatehouseError as error:
            self._changes.put_nowait(error)  # refused (a role taken away): said to the reader
            return
        self.backoff.reset()

    def _subscribed_as(self, frame: dict[str, Any], resubscribe: bool) -> None:
        """The answer to a SUBSCRIBE_AUTHORS, before any broadcast that follows it."""
        data = frame.get("data")
        if frame.get("status_code") != 0 or not isinstance(data, dict):
            return
        offset = data.get("offset")
        if isinstance(offset, str) and offset:
            if data.get("recovered") is False:
                self._offset = offset
                self._changes.put_nowait(Resync(f"history gap: changes before {offset} are lost"))
            elif newer(offset, self._offset):
                self._offset = offset
        elif resubscribe:
            # A live-only subscription (or a gateway without recovery): nothing replayed.
            self._changes.put_nowait(Resync("reconnected: changes in between were not delivered"))

    def _broadcast(self, frame: dict[str, Any]) -> None:
        pkg_id = frame.get("pkg_id", 0)
        offset = frame.get("offset")
        offset = offset if isinstance(offset, str) and offset else None
        if offset is not None and not newer(offset, self._offset):
            return  # already delivered (offsets only grow)
        if pkg_id == HISTORY_GAP:
            self._offset = offset
            self._changes.put_nowait(Resync(f"history gap: changes before {offset} are lost"))
            return
        kind = CHANGE_KINDS.get(pkg_id)
        if kind is None:
            return
        if offset is not None:
            self._offset = offset
        self._changes.put_nowait(AuthorChange(kind, Author.from_json(frame["data"]), offset))

    async def _read(self, socket: ClientConnection) -> None:
        async for message in socket:
            frame = json.loads(message)
            if "type" in frame:
                continue  # auth_ok of a refresh
            req_id = str(frame.get("req_id"))
            if req_id == BROADCAST_REQ_ID:
                self._broadcast(frame)
                continue
            if req_id in self._subscribing:
                self._subscribed_as(frame, self._subscribing.pop(req_id))
            answer = self._pending.get(req_id)
            if answer is not None and not answer.done():
                answer.set_result(frame)
        # Iteration ends on a normal close: report it like any other.
        await socket.recv()

    async def _refresh(self, socket: ClientConnection, expires_at: float) -> None:
        """Send an auth frame with a fresh token before each expiry."""
        while True:
            await asyncio.sleep(max(0.0, expires_at - self.refresh_margin - time.time()))
            self.tokens.invalidate()
            try:
                token = await self.tokens.token()
                await socket.send(json.dumps({"type": "auth", "token": f"Bearer {token}"}))
            except (GatehouseError, ConnectionClosed):
                return  # the socket ends at expiry (4001) and its replacement says why
            renewed = _decode_expiry(token)
            if renewed is None or renewed <= expires_at:
                return  # no later token to be had: the socket ends at expiry, then reconnects
            expires_at = renewed

    def _fail_pending(self, error: GatehouseError) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)
        self._pending.clear()


class _Refused(Exception):
    def __init__(self, error: GatehouseError) -> None:
        self.error = error


def _decode_expiry(token: str) -> float | None:
    """The `exp` of a JWT, read without verification (the gateway verifies it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None
