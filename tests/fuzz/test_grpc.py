"""Every gRPC method of every service fed bytes that are no valid request, and oversized ones.

Calls go through Traefik's gRPC entrypoint (`:authority` names the service, as the gateway
calls it) on a raw channel with identity serializers, so the bytes reach the service as
generated:

- bytes that do not parse as the method's request message: INVALID_ARGUMENT;
- bytes that parse (random fields, unknown fields, odd values): a considered answer,
  never UNKNOWN, INTERNAL or DATA_LOSS, which would mean the service did not handle it;
- a message over the 4 MiB limit: RESOURCE_EXHAUSTED;
- afterwards every service still answers its health check with SERVING.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse_protos.audit.v1 import audit_pb2
from gatehouse_protos.authors.v1 import authors_pb2
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2
from tests.harness.stack import Stack

# `:authority` each service answers to on Traefik's gRPC entrypoint, and its contract.
SERVICES: dict[str, ServiceDescriptor] = {
    "authors": authors_pb2.DESCRIPTOR.services_by_name["AuthorsService"],
    "audit": audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    "ratelimit": ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitService"],
}
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
UNHANDLED = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
)
DEADLINE = 10.0


def methods() -> list[Any]:
    """A test parameter per (service, method)."""
    return [
        pytest.param(name, method, id=f"{name}.{method.name}")
        for name, service in SERVICES.items()
        for method in service.methods
    ]


def request_class(method: MethodDescriptor) -> type[Message]:
    """The generated class of the method's request message."""
    return GetMessageClass(method.input_type)


def parses(method: MethodDescriptor, data: bytes) -> bool:
    """Whether `data` is a valid encoding of the method's request message."""
    try:
        request_class(method)().ParseFromString(data)
    except DecodeError:
        return False
    return True


# Encodings protobuf refuses: a length running past the end, a varint that never ends,
# the reserved wire types 6 and 7, field number 0, and invalid UTF-8 in field 1 (a string
# in several requests); then random bytes, of which those that do not parse are kept.
BROKEN = st.one_of(
    st.sampled_from(
        [
            b"\x0a\x10short",
            b"\x08" + b"\xff" * 11,
            b"\x0e\x00",
            b"\x0f\x00",
            b"\x00\x01",
            b"\x0a\x02\xc3\x28",
        ]
    ),
    st.binary(min_size=1, max_size=512),
)


@pytest.fixture(scope="module")
def channels(stack: Stack) -> Iterator[dict[str, grpc.Channel]]:
    """A raw channel to each service through Traefik (big enough to send oversized messages)."""
    opened = {
        name: grpc.insecure_channel(
            stack.grpc_target,
            options=[
                ("grpc.default_authority", name),
                ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", 4 * MAX_MESSAGE_BYTES),
            ],
        )
        for name in SERVICES
    }
    yield opened
    for channel in opened.values():
        channel.close()


def call(
    channel: grpc.Channel, service: str, method: MethodDescriptor, data: bytes
) -> grpc.StatusCode:
    """Send `data` as the one request of `method`; the status code it ends with."""
    path = f"/{SERVICES[service].full_name}/{method.name}"
    # No serializers: the bytes go on the wire as they are.
    invoke: Any
    try:
        if method.client_streaming or method.server_streaming:
            invoke = channel.stream_stream(path)
            for _ in invoke(iter([data]), timeout=DEADLINE):
                pass
        else:
            invoke = channel.unary_unary(path)
            invoke(data, timeout=DEADLINE)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(("service", "method"), methods())
def test_undecodable_requests_are_invalid_argument(
    channels: dict[str, grpc.Channel], service: str, method: MethodDescriptor
) -> None:
    @given(data=BROKEN.filter(lambda data: not parses(method, data)))
    @FUZZ_SETTINGS
    def refused(data: bytes) -> None:
        code = call(channels[service], service, method, data)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{data!r} -> {code.name}"

    refused()


@pytest.mark.parametrize(("service", "method"), methods())
def test_decodable_junk_gets_a_considered_answer(
    channels: dict[str, grpc.Channel], service: str, method: MethodDescriptor
) -> None:
    @given(data=st.binary(max_size=256).filter(lambda data: parses(method, data)))
    @FUZZ_SETTINGS
    def handled(data: bytes) -> None:
        code = call(channels[service], service, method, data)
        assert code not in UNHANDLED, f"{data!r} -> {code.name}"

    handled()


@pytest.mark.parametrize(("service", "method"), methods())
def test_oversized_requests_are_resource_exhausted(
    channels: dict[str, grpc.Channel], service: str, method: MethodDescriptor
) -> None:
    # A well-formed message over the limit: one unknown length-delimited field, 1 byte too many.
    payload = b"\x00" * (MAX_MESSAGE_BYTES + 1)
    data = b"\xfa\xff\x03" + _varint(len(payload)) + payload  # field 65535, wire type 2
    assert parses(method, data)
    assert call(channels[service], service, method, data) == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_service_is_still_serving(channels: dict[str, grpc.Channel], service: str) -> None:
    health = health_pb2_grpc.HealthStub(channels[service])
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
