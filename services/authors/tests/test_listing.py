"""Listing: filters, offset and cursor pages, totals, and the refusal of bad pages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest

from gatehouse_protos.authors.v1 import authors_pb2 as pb
from gatehouse_protos.common.v1 import pagination_pb2 as page_pb

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

Failure = tuple[grpc.StatusCode, list[tuple[str, str]]]
ExpectFailure = Callable[[Awaitable[Any]], Awaitable[Failure]]


async def _create(stub: AuthorsServiceAsyncStub, names: list[str]) -> list[pb.Author]:
    return [await stub.CreateAuthor(pb.CreateAuthorRequest(name=n)) for n in names]


def _search(text: str, **page: Any) -> pb.ListAuthorsRequest:
    request = pb.ListAuthorsRequest(filter=pb.AuthorFilter(search=text))
    if "cursor" in page:
        request.cursor.CopyFrom(page_pb.CursorPage(**page))
    elif page:
        request.offset.CopyFrom(page_pb.OffsetPage(**page))
    return request


async def test_filters_by_id_exact_name_and_case_insensitive_search(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    ada, _, bob = await _create(stub, [f"{prefix} Ada", f"{prefix} ADAM", f"{prefix} Bob"])

    by_id = await stub.ListAuthors(pb.ListAuthorsRequest(filter=pb.AuthorFilter(id=ada.id)))
    assert [a.name for a in by_id.authors] == [ada.name]

    by_name = await stub.ListAuthors(
        pb.ListAuthorsRequest(filter=pb.AuthorFilter(name=f" {prefix} Bob "))
    )
    assert [a.id for a in by_name.authors] == [bob.id]

    found = await stub.ListAuthors(_search(f"{prefix} ada"))
    assert [a.name for a in found.authors] == [f"{prefix} Ada", f"{prefix} ADAM"]
    assert (found.meta.total, found.meta.total_is_estimate) == (2, False)

    both = await stub.ListAuthors(
        pb.ListAuthorsRequest(filter=pb.AuthorFilter(id=bob.id, search="ada"))
    )
    assert list(both.authors) == []


async def test_search_treats_wildcards_literally(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    await _create(stub, [f"{prefix} 100% sure", f"{prefix} 1000 sure", f"{prefix} a_b", "axb"])
    assert [a.name for a in (await stub.ListAuthors(_search(f"{prefix} 100%"))).authors] == [
        f"{prefix} 100% sure"
    ]
    assert [a.name for a in (await stub.ListAuthors(_search(f"{prefix} a_b"))).authors] == [
        f"{prefix} a_b"
    ]


async def test_offset_pages_are_ordered_by_id_with_an_exact_total(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    created = await _create(stub, [f"{prefix} {i:02}" for i in range(23)])
    ids = [a.id for a in created]

    seen: list[int] = []
    for number in (1, 2, 3):
        reply = await stub.ListAuthors(_search(prefix, page=number, per_page=10))
        seen += [a.id for a in reply.authors]
        meta = reply.meta
        assert (meta.page, meta.per_page, meta.total, meta.pages) == (number, 10, 23, 3)
        assert not meta.total_is_estimate
        assert meta.has_more == (number < 3)
        assert bool(meta.next_cursor) == (number < 3)
    assert seen == ids

    beyond = await stub.ListAuthors(_search(prefix, page=4, per_page=10))
    assert list(beyond.authors) == []
    assert (beyond.meta.total, beyond.meta.has_more) == (23, False)


async def test_an_offset_page_continues_by_its_cursor(
    stub: AuthorsServiceAsyncStub, prefix: str
) -> None:
    created = await _create(stub, [f"{prefix} {i}" for i in range(5)])
    first = await stub.ListAuthors(_search(prefix, page=1, per_page=2))
    rest = await stub.ListAuthors(_search(prefix, cursor=first.meta.next_cursor, per_page=10))
    assert [a.id for a in [*first.authors, *rest.authors]] == [a.id for a in created]


async def test_without_pagination_the_first_1000_authors_come_in_id_order(
    stub: AuthorsServiceAsyncStub, sql: asyncpg.Connection, prefix: str
) -> None:
    await sql.execute(
        "INSERT INTO authors (name) SELECT $1 || g FROM generate_series(1, 1005) AS g", prefix
    )
    reply = await stub.ListAuthors(pb.ListAuthorsRequest())
    ids = [a.id for a in reply.authors]
    assert len(ids) == 1000
    assert ids == sorted(ids)
    assert (reply.meta.page, reply.meta.per_page, reply.meta.has_more) == (1, 1000, True)

    # Past 1000 matches (the default exact-count limit) the total is a flagged estimate.
    filtered = await stub.ListAuthors(_search(prefix))
    assert len(filtered.authors) == 1000
    assert filtered.meta.total_is_estimate
    assert filtered.meta.total > 1000


async def test_cursor_pages_stay_complete_and_duplicate_free_while_rows_are_inserted(
    stub: AuthorsServiceAsyncStub, sql: asyncpg.Connection, prefix: str
) -> None:
    await sql.execute(
        "INSERT INTO authors (name) SELECT $1 || ' ' || g FROM generate_series(1, 300) AS g",
        prefix,
    )
    existing = [
        r["id"]
        for r in await sql.fetch(
            "SELECT id FROM authors WHERE name LIKE $1 || ' %' ORDER BY id", prefix
        )
    ]
    paging_done, writing = asyncio.Event(), asyncio.Event()

    async def insert_meanwhile() -> int:
        inserted = 0
        while not paging_done.is_set():
            await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} late {inserted}"))
            inserted += 1
            writing.set()
        return inserted

    writer = asyncio.create_task(insert_meanwhile())
    seen: list[int] = []
    cursor = ""
    while True:
        reply = await stub.ListAuthors(_search(prefix, cursor=cursor, per_page=7))
        seen += [a.id for a in reply.authors]
        # The later pages are read while rows are being inserted.
        await writing.wait()
        if not reply.meta.has_more:
            break
        cursor = reply.meta.next_cursor
    paging_done.set()
    inserted = await writer

    assert inserted > 0
    assert seen == sorted(set(seen)), "pages overlap or go back"
    assert set(existing) <= set(seen), "rows present before paging were skipped"


async def test_bad_and_tampered_cursors_are_invalid_arguments(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure, prefix: str
) -> None:
    await _create(stub, [f"{prefix} {i}" for i in range(3)])
    good = (await stub.ListAuthors(_search(prefix, page=1, per_page=1))).meta.next_cursor
    middle = len(good) // 2
    flipped = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    bad = ["garbage", "!!!!", good[:-3], good + "AAAA", flipped, good + "="]
    for cursor in bad:
        failure = await expect_failure(stub.ListAuthors(_search(prefix, cursor=cursor, per_page=5)))
        assert failure == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [("cursor.cursor", "is not a cursor this listing issued")],
        ), cursor

    # A cursor cannot be replayed with another filter.
    failure = await expect_failure(stub.ListAuthors(_search(prefix + " ", cursor=good, per_page=5)))
    assert failure[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert len((await stub.ListAuthors(_search(prefix, cursor=good, per_page=5))).authors) == 2


@pytest.mark.parametrize(
    ("page", "violations"),
    [
        (page_pb.OffsetPage(page=0, per_page=10), [("offset.page", "must be at least 1")]),
        (page_pb.OffsetPage(page=-3, per_page=10), [("offset.page", "must be at least 1")]),
        (
            page_pb.OffsetPage(page=1, per_page=0),
            [("offset.per_page", "must be between 1 and 1000")],
        ),
        (
            page_pb.OffsetPage(page=0, per_page=1001),
            [
                ("offset.page", "must be at least 1"),
                ("offset.per_page", "must be between 1 and 1000"),
            ],
        ),
        (
            page_pb.OffsetPage(page=43_643_156, per_page=933),
            [("offset.page", "skips more than 2147483647 rows")],
        ),
        (page_pb.CursorPage(per_page=-1), [("cursor.per_page", "must be between 1 and 1000")]),
        (page_pb.CursorPage(per_page=1001), [("cursor.per_page", "must be between 1 and 1000")]),
    ],
)
async def test_out_of_range_pages_are_invalid_arguments(
    stub: AuthorsServiceAsyncStub,
    expect_failure: ExpectFailure,
    page: page_pb.OffsetPage | page_pb.CursorPage,
    violations: list[tuple[str, str]],
) -> None:
    request = pb.ListAuthorsRequest()
    if isinstance(page, page_pb.OffsetPage):
        request.offset.CopyFrom(page)
    else:
        request.cursor.CopyFrom(page)
    assert await expect_failure(stub.ListAuthors(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        violations,
    )


async def test_bad_filters_are_invalid_arguments(
    stub: AuthorsServiceAsyncStub, expect_failure: ExpectFailure
) -> None:
    request = pb.ListAuthorsRequest(filter=pb.AuthorFilter(id=0, search="x" * 300))
    assert await expect_failure(stub.ListAuthors(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [
            ("filter.id", "must be a positive integer"),
            ("filter.search", "must be at most 255 printable characters"),
        ],
    )
