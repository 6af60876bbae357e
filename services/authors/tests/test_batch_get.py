"""BatchGetAuthors through the real gRPC API on a real database: reads, refusals, and the
line each lookup logs under its own request id."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from prometheus_client import REGISTRY

from gatehouse_kit.logging import configure_logging
from gatehouse_protos.authors.v1 import authors_pb2 as pb

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

Failure = tuple[grpc.StatusCode, list[tuple[str, str]]]
ExpectFailure = Callable[[Awaitable[Any]], Awaitable[Failure]]

MISSING = 10**15


def _batch(
    *ids: int, request_ids: tuple[str, ...] = (), traceparents: tuple[str, ...] = ()
) -> pb.BatchGetAuthorsRequest:
    given = request_ids or ("",) * len(ids)
    parents = traceparents or ("",) * len(ids)
    return pb.BatchGetAuthorsRequest(
        lookups=[
            pb.AuthorLookup(id=i, request_id=r, traceparent=t)
            for i, r, t in zip(ids, given, parents, strict=True)
        ]
    )


def _traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{'1' * 16}-00"


def _reads() -> float:
    labels = {"operation": "get_many"}
    return REGISTRY.get_sample_value("db_query_duration_seconds_count", labels) or 0.0


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The process's log lines, as JSON, while the test runs."""
    stream = io.StringIO()
    configure_logging("authors-test", stream=stream)
    yield stream
    configure_logging("authors-test", stream=sys.stderr)


async def test_found_authors_are_returned_and_missing_ids_left_out_in_one_statement(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    ada = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Ada"))
    bob = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Bob"))
    reads = _reads()

    reply = await stub.BatchGetAuthors(_batch(bob.id, MISSING, ada.id))

    assert sorted(reply.authors, key=lambda a: a.id) == [ada, bob]
    assert _reads() == reads + 1


async def test_an_id_asked_for_twice_is_read_and_returned_once(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    ada = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Ada"))
    reply = await stub.BatchGetAuthors(_batch(ada.id, ada.id, MISSING, MISSING))
    assert list(reply.authors) == [ada]


async def test_a_batch_of_only_missing_ids_is_an_empty_answer(
    stub: AuthorsServiceAsyncStub,
) -> None:
    reply = await stub.BatchGetAuthors(_batch(MISSING, MISSING + 1))
    assert list(reply.authors) == []


async def test_a_full_batch_is_served(stub: AuthorsServiceAsyncStub, prefix: str) -> None:
    ada = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Ada"))
    reply = await stub.BatchGetAuthors(_batch(ada.id, *range(MISSING, MISSING + 99)))
    assert list(reply.authors) == [ada]


@pytest.mark.parametrize(
    ("batch", "violations"),
    [
        (_batch(), [("lookups", "must hold between 1 and 100 lookups")]),
        (_batch(*range(1, 102)), [("lookups", "must hold between 1 and 100 lookups")]),
        (_batch(1, 0), [("lookups[1].id", "must be a positive integer")]),
        (_batch(-5), [("lookups[0].id", "must be a positive integer")]),
    ],
    ids=["empty", "101 lookups", "id 0", "negative id"],
)
async def test_bad_batches_are_invalid_argument_and_read_nothing(
    stub: AuthorsServiceAsyncStub,
    expect_failure: ExpectFailure,
    batch: pb.BatchGetAuthorsRequest,
    violations: list[tuple[str, str]],
) -> None:
    reads = _reads()
    assert await expect_failure(stub.BatchGetAuthors(batch)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        violations,
    )
    assert _reads() == reads


async def test_each_lookup_of_another_request_logs_one_line_under_its_request_id(
    stub: AuthorsServiceAsyncStub, prefix: str, log_stream: io.StringIO
) -> None:
    ada = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Ada"))
    bad = "bad id\nwith a newline"
    request = _batch(
        ada.id,
        MISSING,
        ada.id,
        ada.id,
        ada.id,
        request_ids=(f"{prefix}-a", f"{prefix}-b", "", f"{prefix}-call", bad),
        traceparents=(_traceparent("a" * 32), "not a traceparent", "", "", ""),
    )
    metadata = [("x-request-id", f"{prefix}-call"), ("traceparent", _traceparent("c" * 32))]

    await stub.BatchGetAuthors(request, metadata=metadata)

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    lookups = [line for line in lines if line.get("msg") == "batched_lookup"]
    assert [(line["request_id"], line["author_id"], line["found"]) for line in lookups] == [
        (f"{prefix}-a", ada.id, True),
        (f"{prefix}-b", MISSING, False),
    ]
    # Each line carries its own request's trace id, never the call's.
    assert [line.get("trace_id") for line in lookups] == ["a" * 32, None]
    method = "gatehouse.authors.v1.AuthorsService/BatchGetAuthors"
    assert all(line["level"] == "info" and line["grpc_method"] == method for line in lookups)
    [call] = [
        line
        for line in lines
        if line.get("msg") == "grpc_request" and line["grpc_method"] == method
    ]
    assert (call["request_id"], call["status"], call["trace_id"]) == (
        f"{prefix}-call",
        "OK",
        "c" * 32,
    )
    assert "bad id" not in log_stream.getvalue()


async def test_a_refused_batch_logs_no_lookup_lines(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, log_stream: io.StringIO
) -> None:
    request = _batch(1, 0, request_ids=("req-x", "req-y"))
    code, _ = await expect_failure(stub.BatchGetAuthors(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line for line in lines if line.get("msg") == "batched_lookup"] == []
