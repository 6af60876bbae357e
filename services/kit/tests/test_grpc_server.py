"""The kit's gRPC server bootstrap, exercised with a small real service over loopback."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import structlog
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from gatehouse_kit.errors import InvalidArgument, NotFound, field_violations
from gatehouse_kit.grpc_client import open_channel, unary
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_kit.logging import configure_logging, request_id_var
from gatehouse_kit.metrics import MetricsServer
from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc

SERVICE = "gatehouse.authors.v1.AuthorsService"


class SlowAuthors(authors_pb2_grpc.AuthorsServiceServicer):
    """Answers GetAuthor; id 0 is invalid, 404 is missing, 7 takes `delay` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.started = asyncio.Event()

    async def GetAuthor(
        self, request: authors_pb2.GetAuthorRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> authors_pb2.Author:
        structlog.get_logger("test").info("getting author", author_id=request.id)
        if request.id == 0:
            raise InvalidArgument("bad request", [("id", "must be positive")])
        if request.id == 404:
            raise NotFound("author 404 not found")
        if request.id == 7:
            self.started.set()
            await asyncio.sleep(self.delay)
        return authors_pb2.Author(id=request.id, name="Ada", created_at=timestamp_pb2.Timestamp())


Served = tuple[GrpcService, SlowAuthors, grpc.aio.Channel]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    servicer = SlowAuthors()  # type: ignore[abstract]  # only GetAuthor is served

    def register(server: grpc.aio.Server) -> list[str]:
        authors_pb2_grpc.add_AuthorsServiceServicer_to_server(servicer, server)
        return [SERVICE]

    service = GrpcService(register, host="127.0.0.1", port=0, grace_seconds=5)
    await service.start()
    channel = open_channel(f"127.0.0.1:{service.port}")
    yield service, servicer, channel
    await channel.close()
    await service.stop()


async def test_health_reports_serving_for_each_service(served: Served) -> None:
    _, _, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=2)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_request_id_from_metadata_reaches_the_logs(served: Served) -> None:
    _, _, channel = served
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream)
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    await stub.GetAuthor(
        authors_pb2.GetAuthorRequest(id=3), metadata=[("x-request-id", "req-abc-123")], timeout=2
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [line for line in lines if line.get("msg") == "getting author"]
    assert handled
    assert handled[0]["request_id"] == "req-abc-123"
    assert handled[0]["service"] == "kit-test"


async def test_unary_calls_carry_the_callers_request_id(served: Served) -> None:
    _, _, channel = served
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream)
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    token = request_id_var.set("req-of-the-caller")
    try:
        reply = await unary(
            stub.GetAuthor,
            authors_pb2.GetAuthorRequest(id=3),
            service="authors",
            method="GetAuthor",
            deadline=2,
        )
    finally:
        request_id_var.reset(token)
    assert reply.id == 3
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [line for line in lines if line.get("msg") == "getting author"]
    assert [line["request_id"] for line in handled] == ["req-of-the-caller"]


async def test_every_call_logs_one_line_with_its_request_id_method_status_and_duration(
    served: Served,
) -> None:
    _, _, channel = served
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream)
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    await stub.GetAuthor(
        authors_pb2.GetAuthorRequest(id=3), metadata=[("x-request-id", "req-ok")], timeout=2
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetAuthor(
            authors_pb2.GetAuthorRequest(id=404), metadata=[("x-request-id", "req-404")], timeout=2
        )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    calls = [line for line in lines if line.get("msg") == "grpc_request"]
    assert [(line["request_id"], line["status"]) for line in calls] == [
        ("req-ok", "OK"),
        ("req-404", "NOT_FOUND"),
    ]
    assert {line["grpc_method"] for line in calls} == {f"{SERVICE}/GetAuthor"}
    assert all(line["duration_ms"] >= 0 and line["level"] == "info" for line in calls)


async def test_domain_errors_map_to_status_codes_with_details(served: Served) -> None:
    _, _, channel = served
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.GetAuthor(authors_pb2.GetAuthorRequest(id=0), timeout=2)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(invalid.value)
    assert status is not None
    assert field_violations(status) == [("id", "must be positive")]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetAuthor(authors_pb2.GetAuthorRequest(id=404), timeout=2)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "author 404 not found"


async def test_metrics_change_after_calls(served: Served) -> None:
    _, _, channel = served
    metrics = MetricsServer("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        series = (
            "grpc_server_handled_total{"
            f'grpc_code="NOT_FOUND",grpc_method="GetAuthor",grpc_service="{SERVICE}"}}'
        )

        def value(text: str) -> float:
            for line in text.splitlines():
                if line.startswith(series):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        async with httpx.AsyncClient() as http:
            before = value((await http.get(url)).text)
            stub = authors_pb2_grpc.AuthorsServiceStub(channel)
            upstream = {"service": "authors", "method": "GetAuthor", "code": "NOT_FOUND"}
            counted = REGISTRY.get_sample_value("upstream_requests_total", upstream) or 0.0
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await unary(
                        stub.GetAuthor,
                        authors_pb2.GetAuthorRequest(id=404),
                        service="authors",
                        method="GetAuthor",
                        deadline=2,
                    )
            text = (await http.get(url)).text
        assert value(text) == before + 3
        assert "grpc_server_handling_seconds_bucket" in text
        assert REGISTRY.get_sample_value("upstream_requests_total", upstream) == counted + 3
    finally:
        metrics.close()


async def test_deadline_is_respected(served: Served) -> None:
    _, servicer, channel = served
    servicer.delay = 5
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.GetAuthor(authors_pb2.GetAuthorRequest(id=7), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_graceful_shutdown_finishes_in_flight_and_refuses_new(served: Served) -> None:
    service, servicer, channel = served
    servicer.delay = 1.0
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.GetAuthor(authors_pb2.GetAuthorRequest(id=7), timeout=5))
    await asyncio.wait_for(servicer.started.wait(), 2)
    stopping = asyncio.ensure_future(service.stop())
    await asyncio.sleep(0.2)
    late_channel = open_channel(f"127.0.0.1:{service.port}", max_attempts=1)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authors_pb2_grpc.AuthorsServiceStub(late_channel).GetAuthor(
                authors_pb2.GetAuthorRequest(id=1), timeout=1
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await late_channel.close()
    reply = await in_flight
    assert reply.name == "Ada"
    await stopping


async def test_undecodable_request_bytes_are_invalid_argument(served: Served) -> None:
    _, _, channel = served
    raw = channel.unary_unary(
        f"/{SERVICE}/GetAuthor",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.aio.AioRpcError) as garbage:
        await raw(b"\xff\xff\xff\xff", timeout=2)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert garbage.value.details() == "request is not a valid message of this method"
    # The server carries on with well-formed calls.
    reply = await authors_pb2_grpc.AuthorsServiceStub(channel).GetAuthor(
        authors_pb2.GetAuthorRequest(id=5), timeout=2
    )
    assert reply.id == 5
