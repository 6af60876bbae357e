"""The frames of `/web` and their two encodings: JSON text frames and protobuf binary frames.

Control frames (`auth` from the client, `auth_ok` from the server) are JSON text frames
in both formats, so a browser can authenticate the same way whatever format it reads.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from google.protobuf.message import DecodeError

from gatehouse_gateway import client_json
from gatehouse_gateway.errors import WsStatus
from gatehouse_protos.websocket import websocket_pb2

BROADCAST_REQ_ID = "00000000-0000-0000-0000-000000000000"

Format = Literal["json", "protobuf"]
Frame = str | bytes


class PkgId(IntEnum):
    """What a request asks for, or what a broadcast announces."""

    GET_AUTHORS = 1
    GET_PAGINATED_AUTHORS = 2
    CREATE_AUTHOR = 3
    UPDATE_AUTHOR = 4
    DELETE_AUTHOR = 5
    GET_AUTHOR = 6
    SUBSCRIBE_AUTHORS = 10
    UNSUBSCRIBE_AUTHORS = 11
    AUTHOR_CREATED = 100
    AUTHOR_UPDATED = 101
    AUTHOR_DELETED = 102
    HISTORY_GAP = 103


REQUEST_PKG_IDS = frozenset(p for p in PkgId if p < PkgId.AUTHOR_CREATED)


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request frame; `data` is still to be checked against its pkg_id's schema."""

    pkg_id: PkgId
    req_id: str
    method: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuthFrame:
    """`{"type": "auth", "token": "Bearer <jwt>"}`; `token` is None when it is missing or bad."""

    token: str | None


class MalformedFrame(Exception):
    """A frame that is not a valid request; answered with INVALID_DATA when possible."""

    def __init__(self, msg: str, *, req_id: str | None = None, pkg_id: int = 0) -> None:
        super().__init__(msg)
        self.msg = msg
        self.req_id = req_id
        self.pkg_id = pkg_id


def _bearer(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("Bearer ") and value[7:].strip():
        return value[7:].strip()
    return None


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = client_json.parse(text)
    except client_json.InvalidJson as invalid:
        raise MalformedFrame(f"frame {invalid}") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("frame must be a JSON object")
    return obj


def _control(obj: dict[str, Any]) -> AuthFrame | None:
    """The auth frame `obj` is, or None when it is no control frame at all."""
    if "type" not in obj:
        return None
    if obj["type"] != "auth":
        raise MalformedFrame(
            "unknown frame type",
            req_id=_readable_req_id(obj.get("req_id")),
            pkg_id=_readable_pkg_id(obj.get("pkg_id")),
        )
    return AuthFrame(_bearer(obj.get("token")))


def _readable_req_id(value: object) -> str | None:
    return value if isinstance(value, str) else None


# pkg_id is an int32 on the wire (protobuf format): an error echoes only what fits.
_PKG_ID_RANGE = range(-(2**31), 2**31)


def _readable_pkg_id(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in _PKG_ID_RANGE:
        return value
    return 0


def _request(pkg_id: object, req_id: object, method: object, data: object) -> Request:
    """Check the envelope fields; the error carries whatever ids could be read."""
    readable_id = _readable_req_id(req_id)
    readable_pkg = _readable_pkg_id(pkg_id)
    if readable_pkg not in REQUEST_PKG_IDS:
        raise MalformedFrame("unknown pkg_id", req_id=readable_id, pkg_id=readable_pkg)
    try:
        if readable_id is None:
            raise ValueError
        uuid.UUID(readable_id)
    except ValueError:
        raise MalformedFrame(
            "req_id must be a UUID", req_id=readable_id, pkg_id=readable_pkg
        ) from None
    if method is None:
        method = ""
    if not isinstance(method, str):
        raise MalformedFrame("method must be a string", req_id=readable_id, pkg_id=readable_pkg)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MalformedFrame("data must be an object", req_id=readable_id, pkg_id=readable_pkg)
    return Request(PkgId(readable_pkg), readable_id, method, data)


def auth_ok(expires_at: int) -> str:
    """The server's answer to a successful authentication (always a JSON text frame)."""
    return json.dumps({"type": "auth_ok", "expires_at": expires_at}, separators=(",", ":"))


class JsonCodec:
    """`?format=json`: every frame is a JSON text frame."""

    format: Format = "json"

    def decode(self, frame: Frame) -> Request | AuthFrame:
        """The request or auth frame in `frame`; raises MalformedFrame."""
        if isinstance(frame, bytes):
            raise MalformedFrame("format=json expects text frames")
        obj = _json_object(frame)
        control = _control(obj)
        if control is not None:
            return control
        return _request(obj.get("pkg_id"), obj.get("req_id"), obj.get("method"), obj.get("data"))

    def response(
        self,
        pkg_id: int,
        req_id: str | None,
        status: WsStatus,
        data: Any,
        meta: dict[str, Any] | None = None,
    ) -> Frame:
        """A response frame."""
        return json.dumps(
            {
                "pkg_id": pkg_id,
                "req_id": req_id,
                "status_code": int(status),
                "meta": meta,
                "data": data,
            },
            separators=(",", ":"),
        )

    def broadcast(self, pkg_id: PkgId, data: Any, offset: str | None = None) -> Frame:
        """A broadcast frame; with its offset on a recoverable subscription."""
        frame: dict[str, Any] = {"pkg_id": int(pkg_id), "req_id": BROADCAST_REQ_ID}
        if offset is not None:
            frame["offset"] = offset
        frame["data"] = data
        return json.dumps(frame, separators=(",", ":"))


class ProtobufCodec:
    """`?format=protobuf`: requests and answers are binary `package websocket` messages.

    A text frame is read as a control frame (auth); payloads travel as JSON text in
    `data_json`, as in the monolith.
    """

    format: Format = "protobuf"

    def decode(self, frame: Frame) -> Request | AuthFrame:
        """The request or auth frame in `frame`; raises MalformedFrame."""
        if isinstance(frame, str):
            obj = _json_object(frame)
            control = _control(obj)
            if control is not None:
                return control
            raise MalformedFrame(
                "format=protobuf expects binary frames",
                req_id=_readable_req_id(obj.get("req_id")),
            )
        message = websocket_pb2.Request()
        try:
            message.ParseFromString(frame)
        except DecodeError:
            raise MalformedFrame("frame is not a websocket.Request message") from None
        data: object = None
        if message.data_json:
            try:
                data = client_json.parse(message.data_json)
            except client_json.InvalidJson as invalid:
                raise MalformedFrame(
                    f"data_json {invalid}", req_id=message.req_id, pkg_id=message.pkg_id
                ) from None
        return _request(message.pkg_id, message.req_id, message.method, data)

    def response(
        self,
        pkg_id: int,
        req_id: str | None,
        status: WsStatus,
        data: Any,
        meta: dict[str, Any] | None = None,
    ) -> Frame:
        """A response frame."""
        message = websocket_pb2.Response(
            pkg_id=pkg_id,
            req_id=req_id or "",
            status_code=int(status),
            data_json=json.dumps(data, separators=(",", ":")),
        )
        if meta is not None:
            message.meta.CopyFrom(
                websocket_pb2.Metadata(
                    page=meta.get("page") or 0,
                    per_page=meta.get("per_page") or 0,
                    total=meta.get("total") or 0,
                    pages=meta.get("pages") or 0,
                    next_cursor=meta.get("next_cursor") or "",
                    has_more=bool(meta.get("has_more")),
                )
            )
        return message.SerializeToString()

    def broadcast(self, pkg_id: PkgId, data: Any, offset: str | None = None) -> Frame:
        """A broadcast frame; with its offset on a recoverable subscription."""
        return websocket_pb2.Broadcast(
            pkg_id=int(pkg_id),
            req_id=BROADCAST_REQ_ID,
            data_json=json.dumps(data, separators=(",", ":")),
            offset=offset or "",
        ).SerializeToString()


Codec = JsonCodec | ProtobufCodec
CODECS: dict[str, Codec] = {"json": JsonCodec(), "protobuf": ProtobufCodec()}
