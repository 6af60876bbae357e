"""A WebSocket session through Traefik (ws://localhost:8080/web) with a real token."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e import ws
from tests.e2e.conftest import Tokens, client_address
from tests.harness.stack import Stack


async def test_a_session_through_traefik_uses_every_author_pkg_id_and_hears_broadcasts(
    stack: Stack, web: httpx.AsyncClient, tokens: Tokens
) -> None:
    name = f"e2e-ws-{uuid.uuid4()}"
    headers = {"X-Forwarded-For": client_address()}
    async with ws.session(stack.web_url, await tokens.get("editor"), headers) as socket:
        subscribed = await socket.request(ws.SUBSCRIBE_AUTHORS)
        assert (subscribed["status_code"], subscribed["data"]) == (ws.OK, {"subscribed": True})

        created = await socket.request(ws.CREATE_AUTHOR, {"name": name})
        assert created["status_code"] == ws.OK, created
        author_id = created["data"]["id"]
        assert (await socket.broadcast(ws.AUTHOR_CREATED, author_id))["data"]["name"] == name

        listed = await socket.request(ws.GET_AUTHORS, {"name": name})
        assert [a["id"] for a in listed["data"]] == [author_id]
        paged = await socket.request(ws.GET_PAGINATED_AUTHORS, {"name": name, "per_page": 1})
        assert paged["status_code"] == ws.OK
        assert paged["meta"]["total"] == 1
        assert [a["id"] for a in paged["data"]] == [author_id]
        fetched = await socket.request(ws.GET_AUTHOR, {"id": author_id})
        assert fetched["data"] == created["data"]

        updated = await socket.request(ws.UPDATE_AUTHOR, {"id": author_id, "name": f"{name}-2"})
        assert updated["data"]["name"] == f"{name}-2"
        assert (await socket.broadcast(ws.AUTHOR_UPDATED, author_id))["data"]["name"] == f"{name}-2"

        # A change made over HTTP by another user reaches the subscriber too.
        renamed = await web.put(
            f"/authors/{author_id}",
            json={"name": f"{name}-3"},
            headers=await tokens.headers("admin"),
        )
        assert renamed.status_code == 200
        assert (await socket.broadcast(ws.AUTHOR_UPDATED, author_id))["data"]["name"] == f"{name}-3"

        deleted = await socket.request(ws.DELETE_AUTHOR, {"id": author_id})
        assert (deleted["status_code"], deleted["data"]) == (ws.OK, {"id": author_id})
        assert (await socket.broadcast(ws.AUTHOR_DELETED, author_id))["data"]["name"] == f"{name}-3"
        gone = await socket.request(ws.GET_AUTHOR, {"id": author_id})
        assert gone["status_code"] == ws.NOT_FOUND

        unsubscribed = await socket.request(ws.UNSUBSCRIBE_AUTHORS)
        assert unsubscribed["data"] == {"subscribed": False}


async def test_roles_on_the_socket_are_the_tokens_own(stack: Stack, tokens: Tokens) -> None:
    async with ws.session(stack.web_url, await tokens.get("viewer")) as socket:
        refused = await socket.request(ws.CREATE_AUTHOR, {"name": f"e2e-ws-{uuid.uuid4()}"})
        assert refused["status_code"] == ws.PERMISSION_DENIED
        assert refused["data"]["code"] == "permission_denied"
        assert (await socket.request(ws.GET_AUTHORS, {"id": 1}))["status_code"] == ws.OK
