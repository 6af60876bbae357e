"""schemathesis against the gateway's own OpenAPI document, through Traefik, as `admin`.

Every operation of /openapi.json gets generated requests, valid ones and invalid ones
(a bounded number of each); no answer may be a 5xx, every answer must match the status
codes, content type, headers and schema the document declares for it, and a request
without credentials must be refused.

Left out: schemathesis's checks that the server's input validation agrees exactly
with the documented request schema (`positive_data_acceptance`,
`negative_data_rejection`). A conditional request with a generated `If-Match` rightly
gets 412, which those checks count as a rejection of valid data; see docs/testing.md.

The operations are listed at collection time from the gateway's application (the same
document, built without serving it); each test fuzzes that operation of the document
Traefik serves.

Beside the document, raw HTTP/1.1 requests written byte by byte put what no schema
describes where the document's requests cannot: NUL, invalid UTF-8 and encoded lone
surrogates in paths, query strings, headers and bodies, and JSON bodies nested up to
thousands of levels. None may be answered with a 5xx (a 502 from Traefik included: a
request that broke its connection to a replica breaks the next one sent on it), and
every answer of the gateway is accounted for in the audit log (`tests.fuzz.audit`).
"""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit

import pytest
import schemathesis
from _pytest.mark import ParameterSet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from gatehouse_gateway.app import create_app
from gatehouse_gateway.settings import Settings
from tests.fuzz.audit import AuditLedger
from tests.harness.stack import Stack

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]


def documented_cases() -> list[ParameterSet]:
    """A test case per documented operation and generation mode.

    Invalid requests only for operations that take input: there is nothing to get wrong
    about the others.
    """
    document = create_app(Settings()).openapi()
    cases: list[ParameterSet] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            for mode in EXAMPLES:
                if mode is GenerationMode.POSITIVE or takes_input:
                    # Each case is its own client address, so that the per-address limit
                    # (which also counts requests without a token) is never the answer.
                    client_ip = f"198.51.100.{100 + len(cases)}"
                    label = f"{method.upper()} {path} {mode.value}"
                    cases.append(pytest.param(method.upper(), path, mode, client_ip, id=label))
    return cases


@pytest.fixture(scope="session")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    """The gateway's OpenAPI document as Traefik serves it."""
    return schemathesis.openapi.from_url(f"{stack.web_url}/openapi.json", wait_for_schema=30)


@pytest.mark.parametrize(("method", "path", "mode", "client_ip"), documented_cases())
def test_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema,
    admin_token: str,
    method: str,
    path: str,
    mode: GenerationMode,
    client_ip: str,
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {admin_token}", "X-Forwarded-For": client_ip}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=20)

    answers_as_documented()


HOSTILE_CLIENT_IP = "198.51.100.99"
# Health probes are not user actions: the gateway does not audit them (docs/api.md).
PROBES = frozenset({b"/health", b"/health/live", b"/health/ready"})
# Bytes no text should hold: NUL, a lone continuation byte, an overlong '/', a UTF-8
# encoded lone surrogate, a code point beyond U+10FFFF, and anything else.
HOSTILE_BYTES = st.lists(
    st.sampled_from([b"\x00", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"x"])
    | st.binary(min_size=1, max_size=4),
    min_size=1,
    max_size=6,
).map(b"".join)
# As JSON string content: raw hostile bytes, or escapes of NUL and of lone surrogates.
HOSTILE_STRINGS = HOSTILE_BYTES.map(lambda b: b.replace(b"\\", b"").replace(b'"', b"")) | (
    st.sampled_from([b"\\u0000", b"\\ud800", b"\\udfff\\ud800", b"\\ud83d\\ude00"])
)


def nested(depth: int, objects: bool, leaf: bytes) -> bytes:
    if objects:
        return b'{"a":' * depth + leaf + b"}" * depth
    return b"[" * depth + leaf + b"]" * depth


DEEP_JSON = st.builds(
    nested, st.integers(1, 3000), st.booleans(), st.sampled_from([b"1", b'"x"', b"{}"])
)
BODIES = st.one_of(
    DEEP_JSON,
    DEEP_JSON.map(lambda deep: b'{"name": ' + deep + b"}"),
    HOSTILE_STRINGS.map(lambda text: b'{"name": "' + text + b'"}'),
    st.binary(max_size=64),
)
HEADER_NAMES = st.sampled_from(
    [
        "User-Agent",
        "X-Request-ID",
        "If-Match",
        "If-None-Match",
        "Accept",
        "Content-Type",
        "X-Forwarded-For",
        "Authorization",
    ]
)


def documented_operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation of the document."""
    document = create_app(Settings()).openapi()
    return [(m.upper(), path) for path, item in document["paths"].items() for m in item]


def segment(raw: bytes, encoded: bool) -> bytes:
    """A path segment or query value: percent-encoded, or the raw bytes where HTTP/1.1's
    framing allows (no space, CR, LF; no '/', '?' or '#' that would end it)."""
    if encoded:
        return quote_from_bytes(raw, safe="").encode()
    return re.sub(rb"[\s/?#]", b"", raw) or b"x"


@st.composite
def hostile_requests(draw: st.DrawFn, token: str) -> bytes:
    """One raw request to a documented route with something hostile in it."""
    method, template = draw(st.sampled_from(documented_operations()))
    encoded = draw(st.booleans())
    path = re.sub(
        rb"\{[^}]+\}",
        lambda _: segment(draw(HOSTILE_BYTES), encoded),
        template.encode(),
    )
    if draw(st.booleans()):
        param = draw(
            st.sampled_from([b"name", b"search", b"id", b"username", b"resource", b"cursor"])
        )
        path += b"?" + param + b"=" + segment(draw(HOSTILE_BYTES), encoded)
    headers = {
        b"Host": b"localhost",
        b"Authorization": f"Bearer {token}".encode(),
        b"X-Forwarded-For": HOSTILE_CLIENT_IP.encode(),
        b"Content-Type": b"application/json",
        b"Connection": b"close",
    }
    for name in draw(st.lists(HEADER_NAMES, max_size=2)):
        # Header values may hold anything but the CR and LF that would end them.
        value = draw(HOSTILE_BYTES).replace(b"\r", b"").replace(b"\n", b"")
        prefix = b"Bearer " if name == "Authorization" else b""
        headers[name.encode()] = prefix + value
    body = draw(BODIES) if method in ("POST", "PUT") or draw(st.booleans()) else b""
    headers[b"Content-Length"] = str(len(body)).encode()
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers.items())
    return method.encode() + b" " + path + b" HTTP/1.1\r\n" + head + b"\r\n" + body


def exchange(url: str, request: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Send `request` on a connection of its own; the status line and the headers of the
    answer (names in lower case)."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port or 80), timeout=20) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return status_line, headers


def test_hostile_bytes_in_paths_headers_and_bodies_never_get_a_5xx(
    stack: Stack, admin_token: str
) -> None:
    @given(request=hostile_requests(admin_token))
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def answered_below_500(request: bytes) -> None:
        status_line, headers = exchange(stack.web_url, request)
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
        assert match is not None, f"{request[:160]!r} got no answer: {status_line!r}"
        assert int(match[1]) < 500, f"{request[:160]!r} -> {status_line!r}"
        path = request.split(b" ", 2)[1].split(b"?", 1)[0]
        # Answered by the gateway (not by Traefik itself), on a route it audits.
        if b"x-request-id" in headers and path not in PROBES:
            ledger.record(headers[b"x-request-id"].decode())

    ledger = AuditLedger(stack)
    answered_below_500()
    ledger.assert_accounted()
