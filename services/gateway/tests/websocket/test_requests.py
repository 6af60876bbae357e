"""Every request pkg_id, in both formats, against the real authors service."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gatehouse_gateway.websocket.protocol import PkgId

FORMATS = ["json", "protobuf"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_pkg_id_answers_in_both_formats(
    gateway: Any, issuer: Any, ws: Any, fmt: str
) -> None:
    name = f"Ursula {uuid.uuid4().hex[:8]}"
    async with ws(gateway, issuer.token("editor"), fmt=fmt) as client:
        created = await client.request(PkgId.CREATE_AUTHOR, {"name": f"  {name} "})
        assert created["status_code"] == 0, created
        assert created["pkg_id"] == PkgId.CREATE_AUTHOR
        author = created["data"]
        assert author["name"] == name
        assert set(author) == {"id", "name", "created_at", "updated_at"}

        got = await client.request(PkgId.GET_AUTHOR, {"id": author["id"]})
        assert (got["status_code"], got["data"]) == (0, author)

        listed = await client.request(PkgId.GET_AUTHORS, {"name": name})
        assert (listed["status_code"], listed["data"]) == (0, [author])

        page = await client.request(
            PkgId.GET_PAGINATED_AUTHORS, {"search": name.lower(), "per_page": 1}
        )
        assert page["status_code"] == 0
        assert page["data"] == [author]
        assert page["meta"]["per_page"] == 1
        assert page["meta"]["total"] == 1
        assert page["meta"]["has_more"] is False

        renamed = await client.request(
            PkgId.UPDATE_AUTHOR, {"id": author["id"], "name": f"{name} II"}
        )
        assert renamed["status_code"] == 0
        assert renamed["data"]["name"] == f"{name} II"

        sub = await client.request(PkgId.SUBSCRIBE_AUTHORS)
        assert (sub["status_code"], sub["data"]) == (0, {"subscribed": True})
        unsub = await client.request(PkgId.UNSUBSCRIBE_AUTHORS)
        assert (unsub["status_code"], unsub["data"]) == (0, {"subscribed": False})

        deleted = await client.request(PkgId.DELETE_AUTHOR, {"id": author["id"]})
        assert (deleted["status_code"], deleted["data"]) == (0, {"id": author["id"]})

        missing = await client.request(PkgId.GET_AUTHOR, {"id": author["id"]})
        assert missing["status_code"] == 4
        assert missing["data"]["code"] == "not_found"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_duplicate_name_is_a_conflict(gateway: Any, issuer: Any, ws: Any, fmt: str) -> None:
    name = f"Twin {uuid.uuid4().hex[:8]}"
    async with ws(gateway, issuer.token("editor"), fmt=fmt) as client:
        assert (await client.request(PkgId.CREATE_AUTHOR, {"name": name}))["status_code"] == 0
        again = await client.request(PkgId.CREATE_AUTHOR, {"name": name})
        assert again["status_code"] == 5
        assert again["data"]["code"] == "conflict"


async def test_cursor_pages_carry_next_cursor(gateway: Any, issuer: Any, ws: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    async with ws(gateway, issuer.token("editor"), fmt="protobuf") as client:
        for i in range(3):
            await client.request(PkgId.CREATE_AUTHOR, {"name": f"Cursor {tag} {i}"})
        first = await client.request(
            PkgId.GET_PAGINATED_AUTHORS, {"search": tag, "per_page": 2, "cursor": ""}
        )
        assert first["status_code"] == 0, first
        assert len(first["data"]) == 2
        assert first["meta"]["has_more"] is True
        assert first["meta"]["next_cursor"]
        second = await client.request(
            PkgId.GET_PAGINATED_AUTHORS,
            {"search": tag, "per_page": 2, "cursor": first["meta"]["next_cursor"]},
        )
        assert [a["name"] for a in second["data"]] == [f"Cursor {tag} 2"]
        assert second["meta"]["has_more"] is False


async def test_invalid_name_is_invalid_data(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("editor")) as client:
        reply = await client.request(PkgId.CREATE_AUTHOR, {"name": "   "})
        assert reply["status_code"] == 2
        assert reply["data"]["code"] == "validation_error"
        assert reply["data"]["details"][0]["field"] == "name"
