"""A little real traffic through the stack, so that every dashboard panel has series."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import websockets

GET_AUTHORS = 1
SUBSCRIBE_AUTHORS = 10
AUTHOR_CREATED = 100


async def http_traffic(client: httpx.AsyncClient) -> None:
    """Author CRUD, an audit query and a refused token."""
    created = await client.post("/authors", json={"name": f"sre-{uuid.uuid4()}"})
    assert created.status_code == 201, created.text
    author_id = created.json()["id"]
    for path in ("/authors", f"/authors/{author_id}", "/authors/paginated", "/audit-logs"):
        assert (await client.get(path)).status_code == 200
    assert (
        await client.put(f"/authors/{author_id}", json={"name": f"sre-{uuid.uuid4()}"})
    ).is_success
    assert (await client.delete(f"/authors/{author_id}")).status_code == 204
    assert (await client.get(f"/authors/{author_id}")).status_code == 404
    assert (await client.get("/authors", headers={"Authorization": "Bearer x"})).status_code == 401


async def websocket_traffic(web_url: str, client: httpx.AsyncClient, token: str) -> None:
    """A subscribed socket that sends requests and receives an author broadcast."""
    ws_url = web_url.replace("http", "ws", 1) + "/web"
    async with websockets.connect(
        ws_url,
        additional_headers={"Authorization": f"Bearer {token}", "Origin": web_url},
    ) as socket:
        assert json.loads(await socket.recv())["type"] == "auth_ok"
        for pkg_id in (SUBSCRIBE_AUTHORS, GET_AUTHORS):
            request_id = str(uuid.uuid4())
            await socket.send(
                json.dumps({"pkg_id": pkg_id, "req_id": request_id, "method": "", "data": {}})
            )
            response = json.loads(await socket.recv())
            assert response["req_id"] == request_id
            assert response["status_code"] == 0, response
        created = await client.post("/authors", json={"name": f"sre-ws-{uuid.uuid4()}"})
        assert created.status_code == 201
        async with asyncio.timeout(10):
            while json.loads(await socket.recv())["pkg_id"] != AUTHOR_CREATED:
                pass
        await client.delete(f"/authors/{created.json()['id']}")


async def generate_traffic(web_url: str, token: str) -> None:
    """HTTP and WebSocket traffic as the holder of `token` (it needs every role)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=web_url, headers=headers, timeout=30) as client:
        await http_traffic(client)
        await websocket_traffic(web_url, client, token)
