"""Create, read, update and delete through the real gRPC API on a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest

from gatehouse_protos.authors.v1 import authors_pb2 as pb

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

Failure = tuple[grpc.StatusCode, list[tuple[str, str]]]
ExpectFailure = Callable[[Awaitable[Any]], Awaitable[Failure]]


async def test_an_author_lives_through_create_get_update_delete(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, prefix: str
) -> None:
    created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"  {prefix} Ada \t"))
    assert created.name == f"{prefix} Ada"
    assert created.id > 0
    assert created.version == 1
    assert created.created_at == created.updated_at

    assert await stub.GetAuthor(pb.GetAuthorRequest(id=created.id)) == created

    renamed = await stub.UpdateAuthor(
        pb.UpdateAuthorRequest(id=created.id, name=f"{prefix} Ada L", expected_version=1)
    )
    assert (renamed.name, renamed.version) == (f"{prefix} Ada L", 2)
    assert renamed.created_at == created.created_at
    assert renamed.updated_at.ToDatetime() > created.updated_at.ToDatetime()

    # Without an expected version the update applies unconditionally, still counting.
    again = await stub.UpdateAuthor(pb.UpdateAuthorRequest(id=created.id, name=f"{prefix} Ada L"))
    assert again.version == 3

    await stub.DeleteAuthor(pb.DeleteAuthorRequest(id=created.id, expected_version=3))
    code, _ = await expect_failure(stub.GetAuthor(pb.GetAuthorRequest(id=created.id)))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_missing_authors_are_not_found(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure
) -> None:
    missing = 10**15
    for call in (
        stub.GetAuthor(pb.GetAuthorRequest(id=missing)),
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=missing, name="x")),
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=missing, name="x", expected_version=1)),
        stub.DeleteAuthor(pb.DeleteAuthorRequest(id=missing)),
    ):
        code, _ = await expect_failure(call)
        assert code == grpc.StatusCode.NOT_FOUND


async def test_a_duplicate_name_is_already_exists(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, prefix: str
) -> None:
    first = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Same"))
    other = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Other"))

    code, _ = await expect_failure(
        stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Same "))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, _ = await expect_failure(
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=other.id, name=f"{prefix} Same"))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert (await stub.GetAuthor(pb.GetAuthorRequest(id=other.id))).version == 1
    assert (await stub.GetAuthor(pb.GetAuthorRequest(id=first.id))).name == f"{prefix} Same"


async def test_two_concurrent_creates_of_one_name_let_exactly_one_win(
    stub: AuthorsServiceAsyncStub, sql: asyncpg.Connection, prefix: str
) -> None:
    name = f"{prefix} Twin"
    outcomes = await asyncio.gather(
        *(stub.CreateAuthor(pb.CreateAuthorRequest(name=name)) for _ in range(8)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, pb.Author)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert len(lost) == 7
    assert {e.code() for e in lost} == {grpc.StatusCode.ALREADY_EXISTS}
    assert await sql.fetchval("SELECT count(*) FROM authors WHERE name = $1", name) == 1


async def test_a_stale_version_is_failed_precondition_and_changes_nothing(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, prefix: str
) -> None:
    author = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Versioned"))
    await stub.UpdateAuthor(pb.UpdateAuthorRequest(id=author.id, name=f"{prefix} V2"))

    code, _ = await expect_failure(
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=author.id, name="lost", expected_version=1))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = await expect_failure(
        stub.DeleteAuthor(pb.DeleteAuthorRequest(id=author.id, expected_version=1))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    current = await stub.GetAuthor(pb.GetAuthorRequest(id=author.id))
    assert (current.name, current.version) == (f"{prefix} V2", 2)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty or only whitespace"),
        ("   \t\n ", "must not be empty or only whitespace"),
        ("x" * 10_000, "must be at most 255 characters after trimming"),
        ("x" * 256, "must be at most 255 characters after trimming"),
        ("nul\x00byte", "must not contain control characters"),
    ],
)
async def test_invalid_names_are_refused_and_nothing_is_written(
    stub: AuthorsServiceAsyncStub,
    expect_failure: ExpectFailure,
    sql: asyncpg.Connection,
    prefix: str,
    name: str,
    reason: str,
) -> None:
    existing = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Kept"))
    before = await sql.fetch("SELECT id, name, version FROM authors ORDER BY id")

    code, violations = await expect_failure(stub.CreateAuthor(pb.CreateAuthorRequest(name=name)))
    assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("name", reason)])
    code, violations = await expect_failure(
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=existing.id, name=name))
    )
    assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("name", reason)])

    assert await sql.fetch("SELECT id, name, version FROM authors ORDER BY id") == before


async def test_names_of_exactly_255_characters_are_kept_whole(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    name = (prefix + "é" * 255)[:255]
    created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=name))
    assert created.name == name


@pytest.mark.parametrize("author_id", [0, -1])
async def test_ids_below_one_are_invalid(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, author_id: int
) -> None:
    for call in (
        stub.GetAuthor(pb.GetAuthorRequest(id=author_id)),
        stub.UpdateAuthor(pb.UpdateAuthorRequest(id=author_id, name="x")),
        stub.DeleteAuthor(pb.DeleteAuthorRequest(id=author_id)),
    ):
        assert await expect_failure(call) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [("id", "must be a positive integer")],
        )
