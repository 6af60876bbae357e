"""Frames beyond the gateway's bounds, in both formats: nesting, out-of-range numbers,
lone surrogates. Each gets INVALID_DATA and the socket goes on answering; a failure the
gateway did not foresee still ends in an answer or a close frame, never a dropped socket."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gatehouse_gateway.client_json import MAX_DEPTH
from gatehouse_gateway.websocket import endpoint
from gatehouse_gateway.websocket.protocol import CODECS, PkgId
from gatehouse_protos.websocket import websocket_pb2

NOBODY = {"name": "no author has this name"}
TOO_DEEP = f"is nested deeper than {MAX_DEPTH} levels"
DEEP_ARRAYS = "[" * 1000 + "]" * 1000
DEEP_OBJECTS = '{"a": ' * 300 + "1" + "}" * 300


def envelope(data_json: str, req_id: str, pkg_id: int = PkgId.GET_AUTHOR) -> str:
    """A request frame whose `data` is `data_json` as written (json.dumps would recurse)."""
    return f'{{"pkg_id": {pkg_id}, "req_id": "{req_id}", "method": "", "data": {data_json}}}'


def unhandled(where: str) -> float:
    return REGISTRY.get_sample_value("gateway_unhandled_errors_total", {"where": where}) or 0.0


async def still_answers(client: Any) -> None:
    """The socket answers a ping and a request."""
    pong = await client.connection.ping()
    await pong
    assert (await client.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0


@pytest.mark.parametrize(
    "frame",
    [
        DEEP_ARRAYS,
        DEEP_OBJECTS,
        envelope(DEEP_ARRAYS, str(uuid.uuid4())),
        envelope('{"id": ' + DEEP_OBJECTS + "}", str(uuid.uuid4())),
        "[" * 50_000,
    ],
    ids=["arrays", "objects", "deep-data", "deep-field", "unclosed"],
)
async def test_a_deep_json_frame_gets_invalid_data(
    gateway: Any, issuer: Any, ws: Any, frame: str
) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        await client.send_raw(frame)
        reply = await client.frame()
        # Not parsed, so no id could be read.
        assert (reply["status_code"], reply["req_id"], reply["pkg_id"]) == (2, None, 0)
        assert reply["data"]["code"] == "invalid_data"
        assert reply["data"]["msg"] in (f"frame {TOO_DEEP}", "frame is not valid JSON")
        await still_answers(client)


@pytest.mark.parametrize("data_json", [DEEP_ARRAYS, DEEP_OBJECTS, '{"id": ' + DEEP_ARRAYS + "}"])
async def test_deep_protobuf_data_gets_invalid_data_with_its_ids(
    gateway: Any, issuer: Any, ws: Any, data_json: str
) -> None:
    req_id = str(uuid.uuid4())
    frame = websocket_pb2.Request(
        pkg_id=PkgId.GET_AUTHOR, req_id=req_id, data_json=data_json
    ).SerializeToString()
    async with ws(gateway, issuer.token("viewer"), fmt="protobuf") as client:
        await client.send_raw(frame)
        reply = await client.frame()
        assert (reply["status_code"], reply["req_id"], reply["pkg_id"]) == (2, req_id, 6)
        assert reply["data"]["msg"] == f"data_json {TOO_DEEP}"
        await still_answers(client)


async def test_nested_protobuf_groups_get_invalid_data(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("viewer"), fmt="protobuf") as client:
        # Field 1 as a start-group tag, 10,000 times: nested unknown groups.
        await client.send_raw(b"\x0b" * 10_000)
        reply = await client.frame()
        assert reply["status_code"] == 2
        assert reply["data"]["msg"] == "frame is not a websocket.Request message"
        await still_answers(client)


@pytest.mark.parametrize(
    ("pkg_id", "data", "field"),
    [
        (PkgId.GET_AUTHOR, {"id": 2**70}, "id"),
        (PkgId.GET_AUTHOR, {"id": -(2**70)}, "id"),
        (PkgId.GET_AUTHOR, {"id": 2**63}, "id"),
        (PkgId.GET_AUTHOR, {"id": 0}, "id"),
        (PkgId.GET_AUTHOR, {"id": 7.0}, "id"),
        (PkgId.GET_AUTHOR, {"id": 1e30}, "id"),
        (PkgId.GET_AUTHOR, {"id": True}, "id"),
        (PkgId.GET_AUTHOR, {"id": "7"}, "id"),
        (PkgId.DELETE_AUTHOR, {"id": 2**70}, "id"),
        (PkgId.UPDATE_AUTHOR, {"id": -(2**70), "name": "x"}, "id"),
        (PkgId.GET_AUTHORS, {"id": 2**64}, "id"),
        (PkgId.GET_PAGINATED_AUTHORS, {"page": 2**31}, "page"),
        (PkgId.GET_PAGINATED_AUTHORS, {"page": 2.5}, "page"),
        (PkgId.GET_PAGINATED_AUTHORS, {"per_page": 2**70}, "per_page"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_an_out_of_range_or_inexact_integer_gets_invalid_data(
    gateway: Any, issuer: Any, ws: Any, fmt: str, pkg_id: PkgId, data: dict[str, Any], field: str
) -> None:
    async with ws(gateway, issuer.token("admin"), fmt=fmt) as client:
        reply = await client.request(pkg_id, data)
        assert reply["status_code"] == 2, reply
        assert reply["data"]["code"] == "validation_error"
        assert [d["field"] for d in reply["data"]["details"]] == [field]
        await still_answers(client)


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_a_lone_surrogate_gets_invalid_data(
    gateway: Any, issuer: Any, ws: Any, fmt: str
) -> None:
    # The escape is ASCII on the wire; parsed, it is a character nothing can encode.
    lone = '{"pkg_id": 3, "req_id": "\\ud800", "data": {"name": "\\udfff"}}'
    async with ws(gateway, issuer.token("editor"), fmt=fmt) as client:
        await client.send_raw(lone)
        reply = await client.frame()
        assert reply["status_code"] == 2
        assert reply["data"]["msg"] == "frame holds a lone UTF-16 surrogate"
        if fmt == "protobuf":
            # data_json as json.dumps writes it: the surrogate as an ASCII escape.
            await client.send_raw(client.encode(3, {"name": "\ud800"}, str(uuid.uuid4())))
            reply = await client.frame()
            assert reply["status_code"] == 2
            assert reply["data"]["msg"] == "data_json holds a lone UTF-16 surrogate"
        await still_answers(client)


async def test_a_frame_the_codec_fails_on_unforeseen_gets_invalid_data(
    gateway: Any, issuer: Any, ws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = CODECS["json"]
    real_decode = codec.decode

    def decode(frame: str | bytes) -> Any:
        if frame == "boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real_decode(frame)

    monkeypatch.setattr(codec, "decode", decode)
    before = unhandled("ws_frame")
    async with ws(gateway, issuer.token("viewer")) as client:
        await client.send_raw("boom")
        reply = await client.frame()
        assert (reply["status_code"], reply["req_id"]) == (2, None)
        assert reply["data"]["msg"] == "frame could not be read"
        await still_answers(client)
    assert unhandled("ws_frame") == before + 1


async def test_a_failure_while_serving_closes_1011_with_a_close_frame(
    gateway: Any, issuer: Any, ws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail(self: Any, frame: str | bytes) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(endpoint._Dispatcher, "handle", fail)
    before = unhandled("ws_socket")
    async with ws(gateway, issuer.token("viewer")) as client:
        await client.send_raw(json.dumps({"pkg_id": 1, "req_id": str(uuid.uuid4())}))
        assert await client.closed() == (1011, "internal error")
    assert unhandled("ws_socket") == before + 1
