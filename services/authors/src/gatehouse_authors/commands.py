"""What the authors service does: validate, store (each change with its event)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from gatehouse_authors.cursors import CursorCodec
from gatehouse_authors.domain import Author, AuthorFilter, AuthorPage, CursorPage, OffsetPage
from gatehouse_authors.repository import AuthorRepository
from gatehouse_authors.rules import (
    PER_PAGE_MAX,
    check_id,
    check_lookups,
    check_page,
    clean_filter,
    clean_name,
)
from gatehouse_kit.errors import FailedPrecondition, NotFound
from gatehouse_kit.logging import request_id_var


def _request_id() -> str:
    return request_id_var.get() or ""


class AuthorCommands:
    """The author use cases, independent of the transport that calls them."""

    def __init__(
        self,
        repository: AuthorRepository,
        cursors: CursorCodec,
        *,
        exact_count_limit: int,
    ) -> None:
        self._repository = repository
        self._cursors = cursors
        self._exact_count_limit = exact_count_limit

    async def create(self, name: str) -> Author:
        return await self._repository.insert(clean_name(name), _request_id())

    async def get(self, author_id: int) -> Author:
        author = await self._repository.get(check_id(author_id))
        if author is None:
            raise NotFound(f"author {author_id} not found")
        return author

    async def get_many(self, author_ids: Sequence[int]) -> list[Author]:
        """The authors of 1..100 ids that exist, in no particular order; an id given more
        than once is read once."""
        check_lookups(author_ids)
        return await self._repository.get_many(list(dict.fromkeys(author_ids)))

    async def update(self, author_id: int, name: str, expected_version: int | None) -> Author:
        """Rename; with `expected_version`, only if nobody changed the author meanwhile."""
        check_id(author_id)
        author = await self._repository.update(
            author_id, clean_name(name), expected_version, _request_id()
        )
        if author is None:
            await self._explain_miss(author_id, expected_version)
        return author

    async def delete(self, author_id: int, expected_version: int | None) -> None:
        check_id(author_id)
        author = await self._repository.delete(author_id, expected_version, _request_id())
        if author is None:
            await self._explain_miss(author_id, expected_version)

    async def _explain_miss(self, author_id: int, expected_version: int | None) -> NoReturn:
        """Raise why an update or delete touched no row: missing, or a stale version."""
        current = await self._repository.version_of(author_id)
        if current is None:
            raise NotFound(f"author {author_id} not found")
        raise FailedPrecondition(
            f"author {author_id} is at version {current}, not {expected_version}"
        )

    async def list_page(
        self, raw_filter: AuthorFilter, page: OffsetPage | CursorPage | None
    ) -> AuthorPage:
        """One page in id order; without a page, the first 1000 authors."""
        author_filter = clean_filter(raw_filter)
        if page is None:
            page = OffsetPage(page=1, per_page=PER_PAGE_MAX)
        check_page(page)
        if isinstance(page, CursorPage):
            after_id = self._cursors.decode(page.cursor, author_filter) if page.cursor else None
            offset, number = 0, 0
        else:
            after_id, offset, number = None, (page.page - 1) * page.per_page, page.page
        # One row more than asked tells whether another page follows.
        rows, total = await self._repository.page(
            author_filter,
            after_id=after_id,
            offset=offset,
            limit=page.per_page + 1,
            exact_limit=self._exact_count_limit,
        )
        authors, more = rows[: page.per_page], len(rows) > page.per_page
        next_cursor = self._cursors.encode(authors[-1].id, author_filter) if more else ""
        return AuthorPage(authors, number, page.per_page, total, next_cursor)
