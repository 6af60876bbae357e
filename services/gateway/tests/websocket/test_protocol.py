"""Frame decoding on its own: an error echoes only the ids that both formats can carry."""

from __future__ import annotations

import json

import pytest

from gatehouse_gateway.errors import WsStatus
from gatehouse_gateway.websocket.protocol import CODECS, MalformedFrame
from gatehouse_protos.websocket import websocket_pb2


@pytest.mark.parametrize("pkg_id", [2**31, -(2**31) - 1, 2**70])
@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_an_out_of_range_pkg_id_is_answered_with_pkg_id_0(fmt: str, pkg_id: int) -> None:
    codec = CODECS[fmt]
    frame = json.dumps({"type": "ping", "pkg_id": pkg_id})
    with pytest.raises(MalformedFrame) as refused:
        codec.decode(frame)
    assert refused.value.pkg_id == 0
    answer = codec.response(refused.value.pkg_id, None, WsStatus.INVALID_DATA, None)
    if fmt == "protobuf":
        assert websocket_pb2.Response.FromString(answer).pkg_id == 0  # type: ignore[arg-type]
    else:
        assert json.loads(answer)["pkg_id"] == 0


def test_an_int32_pkg_id_is_echoed() -> None:
    with pytest.raises(MalformedFrame) as refused:
        CODECS["protobuf"].decode(json.dumps({"type": "ping", "pkg_id": 2**31 - 1}))
    assert refused.value.pkg_id == 2**31 - 1
