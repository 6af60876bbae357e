"""A small client of the gateway's WebSocket protocol (docs/websocket.md), JSON format."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

GET_AUTHORS, GET_PAGINATED_AUTHORS, CREATE_AUTHOR = 1, 2, 3
UPDATE_AUTHOR, DELETE_AUTHOR, GET_AUTHOR = 4, 5, 6
SUBSCRIBE_AUTHORS, UNSUBSCRIBE_AUTHORS = 10, 11
AUTHOR_CREATED, AUTHOR_UPDATED, AUTHOR_DELETED = 100, 101, 102
BROADCAST_REQ_ID = "00000000-0000-0000-0000-000000000000"
OK, PERMISSION_DENIED, NOT_FOUND, UNAVAILABLE = 0, 3, 4, 7
# Far above the gateway's upstream deadlines: an answer slower than this is a hang.
ANSWER_WITHIN_SECONDS = 15.0


class Session:
    """One authenticated socket: requests matched to their responses by req_id, and the
    broadcasts that arrive in between kept until asked for."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._broadcasts: list[dict[str, Any]] = []

    async def _frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.socket.recv())
        return frame

    async def request(self, pkg_id: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its response (status_code, data, meta)."""
        req_id = str(uuid.uuid4())
        await self.socket.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data or {}}))
        async with asyncio.timeout(ANSWER_WITHIN_SECONDS):
            while True:
                frame = await self._frame()
                if frame["req_id"] == req_id:
                    return frame
                assert frame["req_id"] == BROADCAST_REQ_ID, frame
                self._broadcasts.append(frame)

    async def broadcast(
        self, pkg_id: int, author_id: int, within: float = ANSWER_WITHIN_SECONDS
    ) -> dict[str, Any]:
        """The broadcast `pkg_id` about author `author_id`, received now or within `within` s."""

        def wanted(frame: dict[str, Any]) -> bool:
            return bool(frame["pkg_id"] == pkg_id and frame["data"]["id"] == author_id)

        for frame in self._broadcasts:
            if wanted(frame):
                self._broadcasts.remove(frame)
                return frame
        async with asyncio.timeout(within):
            while True:
                frame = await self._frame()
                if frame["req_id"] == BROADCAST_REQ_ID and wanted(frame):
                    return frame
                if frame["req_id"] == BROADCAST_REQ_ID:
                    self._broadcasts.append(frame)


def ws_url(http_url: str) -> str:
    """The /web URL beside an http(s) base URL."""
    return http_url.replace("http", "ws", 1) + "/web"


@asynccontextmanager
async def session(
    http_url: str, token: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Session]:
    """An authenticated socket at `http_url`'s /web (header auth), closed on exit."""
    async with websockets.connect(
        ws_url(http_url),
        additional_headers={"Authorization": f"Bearer {token}", **(headers or {})},
        open_timeout=ANSWER_WITHIN_SECONDS,
    ) as socket:
        hello = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_WITHIN_SECONDS))
        assert hello["type"] == "auth_ok", hello
        yield Session(socket)
