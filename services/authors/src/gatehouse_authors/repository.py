"""SQL for authors: the only module that talks to PostgreSQL.

Each method is one statement (or two, for listings) in autocommit; the name's unique
constraint, not a prior lookup, decides duplicates, so concurrent creates cannot race.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from gatehouse_authors.database import database_errors
from gatehouse_authors.domain import Author, AuthorFilter, Total
from gatehouse_authors.tables import authors
from gatehouse_kit.errors import AlreadyExists

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


def conditions(author_filter: AuthorFilter) -> list[ColumnElement[bool]]:
    """The WHERE terms of a filter."""
    terms: list[ColumnElement[bool]] = []
    if author_filter.id is not None:
        terms.append(authors.c.id == author_filter.id)
    if author_filter.name is not None:
        terms.append(authors.c.name == author_filter.name)
    if author_filter.search:
        pattern = f"%{_escape_like(author_filter.search)}%"
        terms.append(authors.c.name.ilike(pattern, escape="\\"))
    return terms


def page_query(
    author_filter: AuthorFilter, *, after_id: int | None, offset: int, limit: int
) -> Select[Any]:
    """Authors in id order, after `after_id` (keyset) and/or skipping `offset` rows."""
    terms = conditions(author_filter)
    if after_id is not None:
        terms.append(authors.c.id > after_id)
    query = select(*_COLUMNS).where(*terms).order_by(authors.c.id).limit(limit)
    return query.offset(offset) if offset else query


def bounded_count_query(author_filter: AuthorFilter, limit: int) -> Select[Any]:
    """How many authors match, counting no further than `limit` rows."""
    matching = select(authors.c.id).where(*conditions(author_filter)).limit(limit)
    return select(func.count()).select_from(matching.subquery())


def matching_query(author_filter: AuthorFilter) -> Select[Any]:
    """The rows a filter matches; EXPLAINed for an estimate of their number."""
    return select(authors.c.id).where(*conditions(author_filter))


def _author(row: Any) -> Author:
    return Author(*row)


class AuthorRepository:
    """Author rows in PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _one(self, operation: str, statement: Any) -> Any:
        with database_errors():
            async with self._engine.connect() as conn:
                result = await conn.execute(statement, execution_options={"operation": operation})
                return result.first()

    async def insert(self, name: str) -> Author:
        """Store a new author; `AlreadyExists` if the name is taken."""
        statement = insert(authors).values(name=name).returning(*_COLUMNS)
        try:
            row = await self._one("insert", statement)
        except IntegrityError as error:
            _raise_if_duplicate(error, name)
            raise
        return _author(row)

    async def get(self, author_id: int) -> Author | None:
        row = await self._one("get", select(*_COLUMNS).where(authors.c.id == author_id))
        return _author(row) if row is not None else None

    async def version_of(self, author_id: int) -> int | None:
        """The stored version of an author, None if it does not exist."""
        row = await self._one("version", select(authors.c.version).where(authors.c.id == author_id))
        return int(row[0]) if row is not None else None

    async def update(
        self, author_id: int, name: str, expected_version: int | None
    ) -> Author | None:
        """Rename and bump the version; None if no row has that id (and version, if given)."""
        match = authors.c.id == author_id
        if expected_version is not None:
            match = and_(match, authors.c.version == expected_version)
        statement = (
            update(authors)
            .where(match)
            .values(name=name, version=authors.c.version + 1, updated_at=func.now())
            .returning(*_COLUMNS)
        )
        try:
            row = await self._one("update", statement)
        except IntegrityError as error:
            _raise_if_duplicate(error, name)
            raise
        return _author(row) if row is not None else None

    async def delete(self, author_id: int, expected_version: int | None) -> Author | None:
        """Remove an author and return it; None if no row has that id (and version)."""
        match = authors.c.id == author_id
        if expected_version is not None:
            match = and_(match, authors.c.version == expected_version)
        row = await self._one("delete", delete(authors).where(match).returning(*_COLUMNS))
        return _author(row) if row is not None else None

    async def page(
        self, author_filter: AuthorFilter, *, after_id: int | None, offset: int, limit: int
    ) -> list[Author]:
        """Up to `limit` matching authors in id order (see `page_query`)."""
        statement = page_query(author_filter, after_id=after_id, offset=offset, limit=limit)
        with database_errors():
            async with self._engine.connect() as conn:
                result = await conn.execute(statement, execution_options={"operation": "list"})
                return [_author(row) for row in result]

    async def total(self, author_filter: AuthorFilter, exact_limit: int) -> Total:
        """The number of matching authors: exact up to `exact_limit`, else estimated.

        The count stops after `exact_limit` + 1 rows, so a page of a huge table never
        counts all of it; past that the planner's row estimate stands in.
        """
        with database_errors():
            async with self._engine.connect() as conn:
                counted = await conn.scalar(
                    bounded_count_query(author_filter, exact_limit + 1),
                    execution_options={"operation": "count"},
                )
                if counted is not None and counted <= exact_limit:
                    return Total(int(counted), estimated=False)
                plan = await conn.scalar(
                    Explain(matching_query(author_filter)),
                    execution_options={"operation": "estimate"},
                )
        estimate = _plan_rows(plan)
        return Total(max(estimate, exact_limit + 1), estimated=True)


def _plan_rows(plan: Any) -> int:
    document = json.loads(plan) if isinstance(plan, str) else plan
    return int(document[0]["Plan"]["Plan Rows"])


def _raise_if_duplicate(error: IntegrityError, name: str) -> None:
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state == _UNIQUE_VIOLATION:
        raise AlreadyExists(f"an author named {name!r} already exists") from None
