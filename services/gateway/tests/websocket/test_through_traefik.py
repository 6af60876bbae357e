"""/web through Traefik with real Keycloak tokens of the realm's development users."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect

NOBODY = {"name": "no author has this name"}


async def _ask(url: str, token: str, pkg_id: int, data: Any, header: bool) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if header else {}
    async with connect(url, additional_headers=headers, open_timeout=10) as connection:
        if not header:
            await connection.send(json.dumps({"type": "auth", "token": f"Bearer {token}"}))
        assert json.loads(await connection.recv())["type"] == "auth_ok"
        req_id = str(uuid.uuid4())
        await connection.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}))
        reply: dict[str, Any] = json.loads(await connection.recv())
        assert reply["req_id"] == req_id
        return reply


@pytest.mark.parametrize(
    ("user", "pkg_id", "data", "status"),
    [
        ("viewer", 1, NOBODY, 0),
        ("viewer", 3, {"name": "never created"}, 3),
        ("nobody", 1, NOBODY, 3),
        ("editor", 3, {"name": f"Keycloak {uuid.uuid4().hex[:8]}"}, 0),
        ("admin", 2, NOBODY, 0),
    ],
)
async def test_real_tokens_and_roles_through_traefik(
    stack: Any, user: str, pkg_id: int, data: Any, status: int
) -> None:
    url = stack.web_url.replace("http", "ws", 1) + "/web"
    reply = await _ask(url, stack.token(user), pkg_id, data, header=True)
    assert reply["status_code"] == status, reply


async def test_first_frame_auth_with_a_keycloak_token(stack: Any) -> None:
    url = stack.web_url.replace("http", "ws", 1) + "/web"
    reply = await _ask(url, stack.token("viewer"), 1, NOBODY, header=False)
    assert (reply["status_code"], reply["data"]) == (0, [])
