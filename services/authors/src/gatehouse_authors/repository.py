"""SQL for authors: the only module that talks to PostgreSQL.

Each method is one statement (or two, for listings) in autocommit; the name's unique
constraint, not a prior lookup, decides duplicates, so concurrent creates cannot race.
A write and its change event are one statement too: the change's `RETURNING` feeds an
insert into the outbox in the same statement (a data-modifying CTE), so both commit or
neither does, with no BEGIN/COMMIT round trips (docs/authors.md, Change events).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlalchemy.util import greenlet_spawn

from gatehouse_authors.database import database_errors
from gatehouse_authors.domain import Author, AuthorFilter, Total
from gatehouse_authors.tables import author_outbox, authors
from gatehouse_kit.errors import AlreadyExists
from gatehouse_protos.authors.v1 import authors_pb2

KIND_CREATED = authors_pb2.AuthorEvent.KIND_CREATED
KIND_UPDATED = authors_pb2.AuthorEvent.KIND_UPDATED
KIND_DELETED = authors_pb2.AuthorEvent.KIND_DELETED

_COLUMNS = (
    authors.c.id,
    authors.c.name,
    authors.c.created_at,
    authors.c.updated_at,
    authors.c.version,
)
_UNIQUE_VIOLATION = "23505"


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <statement>`: the planner's estimate without running it."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Statements are built once per shape with bound parameters, not once per call:
# constructing SQLAlchemy expressions costs more than executing a cached one.
Params = dict[str, Any]
T = TypeVar("T")
Shape = tuple[bool, bool, bool]


def _shape(author_filter: AuthorFilter) -> tuple[Shape, Params]:
    params: Params = {}
    if author_filter.id is not None:
        params["filter_id"] = author_filter.id
    if author_filter.name is not None:
        params["filter_name"] = author_filter.name
    if author_filter.search:
        params["filter_pattern"] = f"%{_escape_like(author_filter.search)}%"
    shape = ("filter_id" in params, "filter_name" in params, "filter_pattern" in params)
    return shape, params


@lru_cache
def _conditions(shape: Shape) -> tuple[ColumnElement[bool], ...]:
    by_id, by_name, by_search = shape
    terms: list[ColumnElement[bool]] = []
    if by_id:
        terms.append(authors.c.id == bindparam("filter_id"))
    if by_name:
        terms.append(authors.c.name == bindparam("filter_name"))
    if by_search:
        terms.append(authors.c.name.ilike(bindparam("filter_pattern"), escape="\\"))
    return tuple(terms)


@lru_cache
def _count(shape: Shape) -> Select[Any]:
    limited = select(authors.c.id).where(*_conditions(shape))
    matching = limited.limit(bindparam("count_limit", type_=Integer))
    return select(func.count()).select_from(matching.subquery())


@lru_cache
def _listing(shape: Shape, keyset: bool, skip: bool) -> Select[Any]:
    terms = list(_conditions(shape))
    if keyset:
        terms.append(authors.c.id > bindparam("after_id"))
    total = _count(shape).scalar_subquery().label("total")
    query = (
        select(*_COLUMNS, total)
        .where(*terms)
        .order_by(authors.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    return query.offset(bindparam("offset", type_=Integer)) if skip else query


def listing_query(
    author_filter: AuthorFilter, *, after_id: int | None, offset: int, limit: int, exact_limit: int
) -> tuple[Select[Any], Params]:
    """Matching authors in id order, after `after_id` (keyset) and/or skipping `offset`
    rows, with the count of all matches (stopping after `exact_limit` + 1) as a last column.

    The count is an uncorrelated subquery, which PostgreSQL evaluates once per statement.
    """
    shape, params = _shape(author_filter)
    params.update(limit=limit, count_limit=exact_limit + 1)
    if after_id is not None:
        params["after_id"] = after_id
    if offset:
        params["offset"] = offset
    return _listing(shape, after_id is not None, bool(offset)), params


def bounded_count_query(author_filter: AuthorFilter, limit: int) -> tuple[Select[Any], Params]:
    """How many authors match, counting no further than `limit` rows."""
    shape, params = _shape(author_filter)
    return _count(shape), {**params, "count_limit": limit}


def matching_query(author_filter: AuthorFilter) -> tuple[Select[Any], Params]:
    """The rows a filter matches; EXPLAINed for an estimate of their number."""
    shape, params = _shape(author_filter)
    return select(authors.c.id).where(*_conditions(shape)), params


_GET = select(*_COLUMNS).where(authors.c.id == bindparam("author_id"))
# One array parameter whatever the number of ids: one statement shape, cached once.
_GET_MANY = select(*_COLUMNS).where(
    authors.c.id == any_(bindparam("author_ids", type_=postgresql.ARRAY(BigInteger)))
)
_VERSION = select(authors.c.version).where(authors.c.id == bindparam("author_id"))
_EVENT_COLUMNS = ["kind", "author_id", "name", "created_at", "updated_at", "version", "request_id"]


def with_event(change: Any, kind: int) -> Select[Any]:
    """`change` (an insert, update or delete returning the author's columns) with the
    outbox row of its event, in one statement: the changed row, if any, is returned."""
    changed = change.cte("changed")
    recorded = (
        insert(author_outbox)
        .from_select(
            _EVENT_COLUMNS,
            select(
                literal(kind),
                changed.c.id,
                changed.c.name,
                changed.c.created_at,
                changed.c.updated_at,
                changed.c.version,
                bindparam("request_id"),
            ),
        )
        .cte("recorded")
    )
    return select(*changed.c).add_cte(recorded)


_INSERT = with_event(
    insert(authors).values(name=bindparam("name")).returning(*_COLUMNS), KIND_CREATED
)


@lru_cache
def _match(versioned: bool) -> ColumnElement[bool]:
    match = authors.c.id == bindparam("author_id")
    return and_(match, authors.c.version == bindparam("expected_version")) if versioned else match


@lru_cache
def _update(versioned: bool) -> Select[Any]:
    change = (
        update(authors)
        .where(_match(versioned))
        .values(name=bindparam("name"), version=authors.c.version + 1, updated_at=func.now())
        .returning(*_COLUMNS)
    )
    return with_event(change, KIND_UPDATED)


@lru_cache
def _delete(versioned: bool) -> Select[Any]:
    return with_event(delete(authors).where(_match(versioned)).returning(*_COLUMNS), KIND_DELETED)


def _author(row: Any) -> Author:
    return Author(*row)


class AuthorRepository:
    """Author rows in PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine

    async def _on_connection(self, work: Callable[[Connection], T]) -> T:
        """`work` on a pooled connection: checkout, statements and checkin in one greenlet.

        `AsyncConnection` spends a greenlet on each of them (three per call); each new
        greenlet maps and unmaps a Python frame stack, about 60 µs of CPU per call in
        all on this workload. The asyncpg dialect still awaits on the event loop inside.
        """

        def run() -> T:
            with self._engine.connect() as conn:
                return work(conn)

        with database_errors():
            return cast(T, await greenlet_spawn(run))

    async def _one(self, operation: str, statement: Any, params: Params) -> Any:
        def first(conn: Connection) -> Any:
            options = {"operation": operation}
            return conn.execute(statement, params, execution_options=options).first()

        return await self._on_connection(first)

    async def insert(self, name: str, request_id: str) -> Author:
        """Store a new author and its event; `AlreadyExists` if the name is taken."""
        try:
            row = await self._one("insert", _INSERT, {"name": name, "request_id": request_id})
        except IntegrityError as error:
            _raise_if_duplicate(error, name)
            raise
        return _author(row)

    async def get(self, author_id: int) -> Author | None:
        row = await self._one("get", _GET, {"author_id": author_id})
        return _author(row) if row is not None else None

    async def get_many(self, author_ids: Sequence[int]) -> list[Author]:
        """The authors with these ids that exist, in no particular order."""
        params: Params = {"author_ids": list(author_ids)}

        def run(conn: Connection) -> list[Author]:
            options = {"operation": "get_many"}
            rows = conn.execute(_GET_MANY, params, execution_options=options).all()
            return [_author(row) for row in rows]

        return await self._on_connection(run)

    async def version_of(self, author_id: int) -> int | None:
        """The stored version of an author, None if it does not exist."""
        row = await self._one("version", _VERSION, {"author_id": author_id})
        return int(row[0]) if row is not None else None

    async def update(
        self, author_id: int, name: str, expected_version: int | None, request_id: str
    ) -> Author | None:
        """Rename and bump the version, with its event; None if no row has that id (and
        version, if given)."""
        params: Params = {"author_id": author_id, "name": name, "request_id": request_id}
        if expected_version is not None:
            params["expected_version"] = expected_version
        try:
            row = await self._one("update", _update(expected_version is not None), params)
        except IntegrityError as error:
            _raise_if_duplicate(error, name)
            raise
        return _author(row) if row is not None else None

    async def delete(
        self, author_id: int, expected_version: int | None, request_id: str
    ) -> Author | None:
        """Remove an author, with its event, and return it; None if no row has that id
        (and version)."""
        params: Params = {"author_id": author_id, "request_id": request_id}
        if expected_version is not None:
            params["expected_version"] = expected_version
        row = await self._one("delete", _delete(expected_version is not None), params)
        return _author(row) if row is not None else None

    async def page(
        self,
        author_filter: AuthorFilter,
        *,
        after_id: int | None,
        offset: int,
        limit: int,
        exact_limit: int,
    ) -> tuple[list[Author], Total]:
        """Up to `limit` matching authors in id order, and how many match in all.

        The count rides along with the page (one round trip) and stops after
        `exact_limit` + 1 rows, so no page of a huge table counts all of it; past
        that, the planner's row estimate stands in and is flagged as such.
        """
        statement, params = listing_query(
            author_filter, after_id=after_id, offset=offset, limit=limit, exact_limit=exact_limit
        )

        def run(conn: Connection) -> tuple[list[Author], Total]:
            rows = conn.execute(statement, params, execution_options={"operation": "list"}).all()
            if rows:
                counted = int(rows[0][-1])
            else:
                # Past the last page the count has no row to ride on.
                count, count_params = bounded_count_query(author_filter, exact_limit + 1)
                options = {"operation": "count"}
                counted = int(conn.scalar(count, count_params, execution_options=options) or 0)
            found = [_author(row[:-1]) for row in rows]
            if counted <= exact_limit:
                return found, Total(counted, estimated=False)
            matching, matching_params = matching_query(author_filter)
            options = {"operation": "estimate"}
            plan = conn.scalar(Explain(matching), matching_params, execution_options=options)
            return found, Total(max(_plan_rows(plan), exact_limit + 1), estimated=True)

        return await self._on_connection(run)


def _plan_rows(plan: Any) -> int:
    document = json.loads(plan) if isinstance(plan, str) else plan
    return int(document[0]["Plan"]["Plan Rows"])


def _raise_if_duplicate(error: IntegrityError, name: str) -> None:
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state == _UNIQUE_VIOLATION:
        raise AlreadyExists(f"an author named {name!r} already exists") from None
