"""A million authors: pages and totals read a page's worth of rows, never the table.

Asserted on the plans PostgreSQL actually executed (EXPLAIN ANALYZE row counts) for
the very statements the repository issues, so the checks do not depend on timing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Select

from gatehouse_authors.domain import AuthorFilter
from gatehouse_authors.repository import Params, bounded_count_query, listing_query
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from gatehouse_protos.common.v1 import pagination_pb2 as page_pb

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

ROWS = 1_000_000
EXACT_COUNT_LIMIT = 1_000  # the service's default
DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy


@pytest.fixture(scope="module", autouse=True)
async def million_authors(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, $1) AS g",
            ROWS,
        )
        # What autovacuum would do shortly after such a load.
        await conn.execute("VACUUM ANALYZE authors")
    finally:
        await conn.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _executed_plan(
    sql: asyncpg.Connection, query: tuple[Select[Any], Params]
) -> list[dict[str, Any]]:
    statement, params = query
    compiled = statement.params(params).compile(
        dialect=DIALECT, compile_kwargs={"literal_binds": True}
    )
    document = await sql.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")
    return list(_nodes(json.loads(document)[0]["Plan"]))


def _rows_read(nodes: list[dict[str, Any]]) -> int:
    """Rows the scan nodes produced or filtered out: what was read from the table."""
    return sum(
        int(n["Actual Rows"] * n["Actual Loops"])
        + int(n.get("Rows Removed by Filter", 0))
        + int(n.get("Rows Removed by Index Recheck", 0))
        for n in nodes
        if "Scan" in n["Node Type"]
    )


@pytest.mark.parametrize(
    ("author_filter", "after_id", "offset"),
    [
        (AuthorFilter(), None, 0),
        (AuthorFilter(), None, 50),
        (AuthorFilter(), 500_000, 0),
        (AuthorFilter(), 999_990, 0),
        # 'author 12345' and 'author 123450'..'author 123459', found by the trigram index.
        (AuthorFilter(search="AUTHOR 12345"), None, 0),
    ],
)
async def test_a_page_and_its_total_read_a_bounded_number_of_rows(
    sql: asyncpg.Connection, author_filter: AuthorFilter, after_id: int | None, offset: int
) -> None:
    query = listing_query(
        author_filter, after_id=after_id, offset=offset, limit=51, exact_limit=EXACT_COUNT_LIMIT
    )
    nodes = await _executed_plan(sql, query)
    if not author_filter.search:
        assert ("Index Scan", "authors_pkey") in [
            (n["Node Type"], n.get("Index Name")) for n in nodes
        ]
    # The page's rows plus at most the counting limit: never the million.
    assert _rows_read(nodes) <= offset + 51 + EXACT_COUNT_LIMIT + 1


async def test_counting_past_the_last_page_stops_at_the_exact_count_limit(
    sql: asyncpg.Connection,
) -> None:
    nodes = await _executed_plan(sql, bounded_count_query(AuthorFilter(), EXACT_COUNT_LIMIT + 1))
    assert _rows_read(nodes) <= EXACT_COUNT_LIMIT + 1


async def test_pages_of_a_million_rows_carry_a_flagged_estimate(
    stub: AuthorsServiceAsyncStub,
) -> None:
    first = await stub.ListAuthors(
        pb.ListAuthorsRequest(offset=page_pb.OffsetPage(page=1, per_page=50))
    )
    meta = first.meta
    assert len(first.authors) == 50
    assert meta.total_is_estimate
    assert 0.9 * ROWS <= meta.total <= 1.1 * ROWS
    assert meta.pages == -(-meta.total // 50)
    assert meta.has_more

    later = await stub.ListAuthors(
        pb.ListAuthorsRequest(cursor=page_pb.CursorPage(cursor=meta.next_cursor, per_page=50))
    )
    assert later.authors[0].id == first.authors[-1].id + 1
    assert later.meta.total_is_estimate


async def test_a_narrow_search_in_a_million_rows_has_an_exact_total(
    stub: AuthorsServiceAsyncStub,
) -> None:
    reply = await stub.ListAuthors(
        pb.ListAuthorsRequest(
            filter=pb.AuthorFilter(search="AUTHOR 12345"),
            offset=page_pb.OffsetPage(page=1, per_page=5),
        )
    )
    assert [a.name for a in reply.authors] == [
        "author 12345",
        *(f"author 12345{i}" for i in range(4)),
    ]
    assert (reply.meta.total, reply.meta.total_is_estimate, reply.meta.pages) == (11, False, 3)
