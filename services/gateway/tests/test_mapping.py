"""How upstream statuses, refusals and proxies map onto what clients see."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata
from prometheus_client import REGISTRY

from gatehouse_gateway.errors import ApiError, ErrorCode, WsStatus, from_grpc
from gatehouse_gateway.http.client_ip import TrustedProxies
from gatehouse_gateway.http.routes.authors import _expected_version
from gatehouse_gateway.settings import Settings
from gatehouse_gateway.upstreams import Upstreams
from gatehouse_kit.errors import InvalidArgument


def _rpc_error(
    code: grpc.StatusCode, message: str = "", trailing: Metadata | None = None
) -> AioRpcError:
    return AioRpcError(code, Metadata(), trailing or Metadata(), details=message)


@pytest.mark.parametrize(
    ("code", "status", "error_code", "ws_status"),
    [
        (grpc.StatusCode.NOT_FOUND, 404, ErrorCode.NOT_FOUND, WsStatus.NOT_FOUND),
        (grpc.StatusCode.ALREADY_EXISTS, 409, ErrorCode.CONFLICT, WsStatus.CONFLICT),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            412,
            ErrorCode.PRECONDITION_FAILED,
            WsStatus.CONFLICT,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            503,
            ErrorCode.SERVICE_UNAVAILABLE,
            WsStatus.UNAVAILABLE,
        ),
        (grpc.StatusCode.UNAVAILABLE, 503, ErrorCode.SERVICE_UNAVAILABLE, WsStatus.UNAVAILABLE),
        (grpc.StatusCode.CANCELLED, 503, ErrorCode.SERVICE_UNAVAILABLE, WsStatus.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, ErrorCode.UPSTREAM_TIMEOUT, WsStatus.UNAVAILABLE),
        (grpc.StatusCode.INTERNAL, 500, ErrorCode.INTERNAL_ERROR, WsStatus.ERROR),
        (grpc.StatusCode.UNKNOWN, 500, ErrorCode.INTERNAL_ERROR, WsStatus.ERROR),
    ],
)
def test_grpc_status_maps_to_http_and_websocket_codes(
    code: grpc.StatusCode, status: int, error_code: ErrorCode, ws_status: WsStatus
) -> None:
    error = from_grpc(_rpc_error(code, "db password=hunter2 at 10.0.0.5"), "authors")
    assert (error.status, error.code, error.ws_status) == (status, error_code, ws_status)
    if status >= 500:
        assert "hunter2" not in error.msg


def test_invalid_argument_carries_field_violations() -> None:
    status = InvalidArgument("invalid author", [("name", "must not be empty")]).to_status()
    trailing = Metadata(("grpc-status-details-bin", status.SerializeToString()))
    error = from_grpc(
        _rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "invalid author", trailing), "authors"
    )
    assert (error.status, error.code) == (400, ErrorCode.VALIDATION_ERROR)
    assert error.details == [{"field": "name", "msg": "must not be empty"}]
    assert error.body() == {
        "error": {
            "code": "validation_error",
            "msg": "invalid author",
            "details": [{"field": "name", "msg": "must not be empty"}],
        }
    }


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, 127.0.0.1", "203.0.113.7"),
        ("192.0.2.10", "203.0.113.7", "192.0.2.10"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: str | None, client: str
) -> None:
    proxies = TrustedProxies(["127.0.0.1/32", "::1/128"])
    assert proxies.client_ip(peer, forwarded) == client


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, None), ("*", None), ('"7"', 7), ('W/"7"', 7), ("7", 7)],
)
def test_if_match_names_the_expected_version(header: str | None, version: int | None) -> None:
    assert _expected_version(header) == version


@pytest.mark.parametrize("header", ['"abc"', '"1", "2"', ""])
def test_an_if_match_naming_no_single_version_is_a_failed_precondition(header: str) -> None:
    with pytest.raises(ApiError) as raised:
        _expected_version(header)
    assert raised.value.status == 412


@pytest.mark.parametrize(
    ("code", "opens"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        # A healthy server cancels the calls of a burst beyond what one connection takes.
        (grpc.StatusCode.CANCELLED, False),
        (grpc.StatusCode.NOT_FOUND, False),
    ],
)
async def test_only_an_upstream_in_trouble_opens_its_breaker(
    code: grpc.StatusCode, opens: bool
) -> None:
    upstreams = Upstreams(Settings(breaker_failure_threshold=2, breaker_open_seconds=30))

    async def failing(request: object, **options: object) -> None:
        raise _rpc_error(code)

    class Failing:
        def __init__(self, channel: grpc.aio.Channel) -> None:
            self.GetAuthor = failing

    stub = upstreams.authors.stub(Failing)
    try:
        for _ in range(3):
            with pytest.raises(ApiError):
                await upstreams.authors.call(stub.GetAuthor, None)  # type: ignore[arg-type]
        state = REGISTRY.get_sample_value("circuit_breaker_state", {"service": "authors"})
        assert state == (1 if opens else 0)
    finally:
        await upstreams.close()
