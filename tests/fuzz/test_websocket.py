"""The `/web` WebSocket fed hypothesis-generated frames, through Traefik, in both formats.

Frames range from valid requests with odd values to envelopes with fields of the wrong
type, unknown control frames, random text and random bytes, and frames over the size
limit; and hostile ones: JSON nested up to thousands of levels (whole frames, `data`,
one field, protobuf `data_json`), integers far out of range, NUL and lone surrogates in
strings, text frames that are not UTF-8, protobuf strings that are not UTF-8 and nested
protobuf groups. Each frame must get what docs/websocket.md promises: a response
(INVALID_DATA for what cannot be read as a request; never ERROR, the status of an
internal failure) that echoes a readable req_id, or a close frame with a documented code
(1007 a text frame not UTF-8, 1008 repeated abuse, 1009 too big, 4001 a bad auth frame);
a socket dropped without a close frame fails. A socket opened before the fuzzing still gets answers
afterwards, and no gateway process restarted. Every answered frame is accounted for in
the audit log (`tests.fuzz.audit`).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gatehouse_gateway import client_json
from gatehouse_protos.websocket import websocket_pb2
from tests.chaos.observe import supervised
from tests.fuzz.audit import AuditLedger
from tests.harness.stack import Stack

# docs/websocket.md: text not UTF-8, policy violation (repeated abuse), message too big,
# bad auth frame. A socket dropped without a close frame has no code at all.
DOCUMENTED_CLOSES = frozenset({1007, 1008, 1009, 4001})
# A timeout's signal can land inside hypothesis's own bookkeeping (a weakref callback),
# where the exception it raises is ignored and the run then never ends; a timer thread
# ends a run over the bound for certain, with every thread's stack.
pytestmark = pytest.mark.timeout(300, method="thread")
# status_code 0..7 of docs/websocket.md but 1, ERROR: an internal failure, never right for input.
ANSWERS = frozenset(range(8)) - {1}
FRAME_LIMIT = 64 * 1024
ANSWER_TIMEOUT = 10.0
FUZZ_CLIENT_IP = "198.51.100.200"

TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
PKG_IDS = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 10, 11, 100, 101, -1, 2**31, 2**63]) | st.integers()
REQ_IDS = st.uuids().map(str) | TEXT
FIELDS = st.sampled_from(["id", "name", "search", "page", "per_page", "cursor"])
DATA = JSON_VALUES | st.dictionaries(FIELDS, JSON_VALUES, max_size=4)
ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "pkg_id": PKG_IDS | TEXT | st.booleans() | st.none(),
        "req_id": REQ_IDS | st.integers() | st.none(),
        "method": TEXT | st.integers(),
        "data": DATA,
        "type": st.sampled_from(["auth", "ping", "subscribe"]),
        "token": TEXT,
    },
)
# Requests with a known pkg_id and a UUID req_id: the data is what is odd about them.
REQUESTS = st.fixed_dictionaries(
    {
        "pkg_id": st.sampled_from([1, 2, 3, 4, 5, 6, 10, 11]),
        "req_id": st.uuids().map(str),
        "method": TEXT,
        "data": DATA,
    }
)


def nested(depth: int, objects: bool) -> str:
    """JSON `depth` levels deep, written out (json.dumps would recurse)."""
    return '{"a":' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth


# Around the documented limit of 32 levels, and far beyond it.
DEPTHS = st.sampled_from([31, 32, 33, 100, 1000, 3000]) | st.integers(1, 3000)
DEEP = st.builds(nested, DEPTHS, st.booleans())
# JSON string literals: NUL and lone surrogates as escapes (a pair is one character).
HOSTILE_STRINGS = st.sampled_from(
    ['"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"']
)
HUGE_NUMBERS = st.sampled_from(
    ["1e999", "-1e999", "7.0", "1e30", "NaN", "Infinity", str(2**70), str(-(2**70)), "9" * 5000]
) | st.integers().map(str)
# `data` as JSON text, hostile: deep itself, a deep or huge field, a hostile name.
HOSTILE_DATA = st.one_of(
    DEEP,
    st.builds(lambda field, value: f'{{"{field}": {value}}}', FIELDS, DEEP | HUGE_NUMBERS),
    HOSTILE_STRINGS.map(lambda text: f'{{"name": {text}}}'),
)


def request_text(pkg_id: int, req_id: str, data: str) -> str:
    return f'{{"pkg_id": {pkg_id}, "req_id": {req_id}, "method": "", "data": {data}}}'


REQUEST_PKG_IDS = st.sampled_from([1, 2, 3, 4, 5, 6, 10, 11])
HOSTILE_JSON_FRAMES = st.one_of(
    DEEP,
    st.builds(request_text, REQUEST_PKG_IDS, st.uuids().map(lambda u: f'"{u}"'), HOSTILE_DATA),
    st.builds(request_text, REQUEST_PKG_IDS, HOSTILE_STRINGS, st.just("{}")),
    st.builds(request_text, HUGE_NUMBERS, st.uuids().map(lambda u: f'"{u}"'), st.just("{}")),
)


class InvalidText(bytes):
    """Bytes sent as a text frame: not UTF-8, which the protocol itself refuses (1007)."""


INVALID_TEXT = st.sampled_from([b"\xff", b'{"req_id": "\xed\xa0\x80"}', b"\xc0\xaf"]).map(
    InvalidText
)
JSON_FRAMES = st.one_of(
    REQUESTS.map(json.dumps),
    ENVELOPES.map(json.dumps),
    JSON_VALUES.map(json.dumps),
    TEXT,
    st.binary(max_size=64),
)


def protobuf_request(request: dict[str, Any]) -> bytes:
    """A request as a binary `websocket.Request` frame (data as JSON text in data_json)."""
    return websocket_pb2.Request(
        pkg_id=request["pkg_id"],
        req_id=request["req_id"],
        method=request["method"],
        data_json=json.dumps(request["data"]),
    ).SerializeToString()


def protobuf_field(number: int, payload: bytes) -> bytes:
    """One length-delimited field, written by hand: its bytes need not be UTF-8."""
    return bytes([number << 3 | 2, len(payload)]) + payload


HOSTILE_PROTOBUF_FRAMES = st.one_of(
    st.builds(
        lambda pkg_id, req_id, data: websocket_pb2.Request(
            pkg_id=pkg_id, req_id=req_id, data_json=data
        ).SerializeToString(),
        REQUEST_PKG_IDS,
        st.uuids().map(str),
        HOSTILE_DATA,
    ),
    # A req_id (field 2) or data_json (field 4) that is not UTF-8; nested groups.
    st.builds(protobuf_field, st.sampled_from([2, 4]), st.binary(min_size=1, max_size=8)),
    st.integers(1, 5000).map(lambda n: b"\x0b" * n),
    # Auth and other control frames are JSON text in this format too.
    HOSTILE_JSON_FRAMES,
)
PROTOBUF_FRAMES = st.one_of(
    REQUESTS.map(protobuf_request),
    st.builds(
        lambda pkg_id, req_id, method, data: websocket_pb2.Request(
            pkg_id=pkg_id, req_id=req_id, method=method, data_json=data
        ).SerializeToString(),
        st.integers(-(2**31), 2**31 - 1),
        REQ_IDS,
        TEXT,
        DATA.map(json.dumps) | TEXT,
    ),
    st.binary(max_size=256),
    ENVELOPES.map(json.dumps),
)


def sometimes_oversized(frames: st.SearchStrategy[Any], big: str | bytes) -> st.SearchStrategy[Any]:
    """`frames`, and one time in twenty a frame over the size limit."""
    return st.integers(0, 19).flatmap(lambda n: st.just(big) if n == 0 else frames)


FRAMES = {
    ("json", "any"): sometimes_oversized(JSON_FRAMES, "x" * (FRAME_LIMIT + 1)),
    ("protobuf", "any"): sometimes_oversized(PROTOBUF_FRAMES, b"\x00" * (FRAME_LIMIT + 1)),
    ("json", "hostile"): HOSTILE_JSON_FRAMES | INVALID_TEXT,
    ("protobuf", "hostile"): HOSTILE_PROTOBUF_FRAMES,
}


class Socket:
    """One fuzzed socket, opened again whenever the server closed it."""

    def __init__(self, url: str, token: str) -> None:
        self._url = url
        self._token = token
        self._opened = contextlib.ExitStack()
        self.connection: ClientConnection | None = None

    def open(self) -> ClientConnection:
        """The open connection (a new one, authenticated, if the last was closed)."""
        if self.connection is None:
            self.connection = self._opened.enter_context(
                connect(
                    self._url,
                    additional_headers={
                        "Authorization": f"Bearer {self._token}",
                        "X-Forwarded-For": FUZZ_CLIENT_IP,
                    },
                    max_size=None,
                    open_timeout=ANSWER_TIMEOUT,
                )
            )
            hello = json.loads(self.connection.recv(timeout=ANSWER_TIMEOUT))
            assert hello["type"] == "auth_ok", hello
        return self.connection

    def close(self) -> None:
        """Close the socket, if open."""
        self._opened.close()
        self.connection = None


def readable_req_id(frame: str | bytes) -> str | None:
    """The req_id of a request frame (a string field), if any.

    Control frames (with a `type`) carry no req_id of a request, so none is read there,
    nor in JSON beyond the documented bounds (client_json: nesting, numbers, surrogates),
    which the gateway refuses unread.
    """
    try:
        if isinstance(frame, bytes):
            message = websocket_pb2.Request()
            message.ParseFromString(frame)
            return message.req_id or None
        obj = client_json.parse(frame)
    except Exception:
        return None
    value = obj.get("req_id") if isinstance(obj, dict) and "type" not in obj else None
    return value if isinstance(value, str) else None


def answer_of(frame: str | bytes) -> dict[str, Any] | None:
    """A response frame as a dict; None for frames that answer nothing (broadcasts)."""
    if isinstance(frame, bytes):
        response = websocket_pb2.Response()
        response.ParseFromString(frame)
        return {"req_id": response.req_id or None, "status_code": response.status_code}
    obj = json.loads(frame)
    if not isinstance(obj, dict) or "status_code" not in obj:
        return None
    return obj


@pytest.fixture(scope="module")
def admin_ws(stack: Stack, admin_token: str) -> Iterator[dict[str, Any]]:
    """The socket URL and token, with a bystander socket and the gateways' pids."""
    url = stack.web_url.replace("http", "ws", 1) + "/web"
    bystander = Socket(f"{url}?format=json", admin_token)
    bystander.open()
    context = {"url": url, "token": admin_token, "bystander": bystander, "stack": stack}
    context["pids"] = {k: v for k, v in supervised(stack).items() if k.startswith("gateway")}
    yield context
    bystander.close()


@pytest.mark.parametrize("kind", ["any", "hostile"])
@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_every_frame_gets_a_documented_answer(
    admin_ws: dict[str, Any], fmt: str, kind: str
) -> None:
    sock = Socket(f"{admin_ws['url']}?format={fmt}", admin_ws["token"])

    @given(frames=st.lists(FRAMES[fmt, kind], min_size=1, max_size=3))
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def answered(frames: list[str | bytes]) -> None:
        for frame in frames:
            connection = sock.open()
            try:
                if isinstance(frame, InvalidText):
                    connection.send(bytes(frame), text=True)
                else:
                    connection.send(frame)
                answer = _next_answer(connection)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                sock.close()
                assert code in DOCUMENTED_CLOSES, f"{frame!r:.120} closed the socket with {code}"
                continue
            assert answer["status_code"] in ANSWERS, f"{frame!r:.120} -> {answer}"
            ledger.record(answer["req_id"] or "")
            req_id = readable_req_id(frame)
            if req_id is not None and isinstance(frame, str) == (fmt == "json"):
                assert answer["req_id"] == req_id, f"{frame!r:.120} -> {answer}"

    ledger = AuditLedger(admin_ws["stack"])
    try:
        answered()
    finally:
        sock.close()
    ledger.assert_accounted()


def test_the_gateway_keeps_serving_others(stack: Stack, admin_ws: dict[str, Any]) -> None:
    connection = admin_ws["bystander"].open()
    req_id = str(uuid.uuid4())
    connection.send(json.dumps({"pkg_id": 1, "req_id": req_id, "method": "", "data": {}}))
    answer = _next_answer(connection)
    assert (answer["req_id"], answer["status_code"]) == (req_id, 0)
    now = {k: v for k, v in supervised(stack).items() if k.startswith("gateway")}
    assert now == admin_ws["pids"], "a gateway process restarted during the fuzzing"


def _next_answer(connection: ClientConnection) -> dict[str, Any]:
    """The next response on `connection`, skipping broadcasts; raises ConnectionClosed."""
    while True:
        answer = answer_of(connection.recv(timeout=ANSWER_TIMEOUT))
        if answer is not None:
            return answer
