"""Input rules of the author domain; each breach is an `InvalidArgument` field violation."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from gatehouse_authors.domain import AuthorFilter, CursorPage, OffsetPage
from gatehouse_authors.tables import NAME_MAX
from gatehouse_kit.errors import InvalidArgument

PER_PAGE_MAX = 1000
# The most lookups one BatchGetAuthors call may hold.
MAX_BATCH_GET = 100


def _control_free(text: str) -> bool:
    # PostgreSQL refuses NUL in text, and control characters have no place in a name.
    return not any(unicodedata.category(c) == "Cc" for c in text)


def clean_name(raw: str, field: str = "name") -> str:
    """`raw` trimmed, if it is 1..255 characters without control characters."""
    name = raw.strip()
    if not name:
        raise InvalidArgument("invalid name", [(field, "must not be empty or only whitespace")])
    if len(name) > NAME_MAX:
        raise InvalidArgument(
            "invalid name", [(field, f"must be at most {NAME_MAX} characters after trimming")]
        )
    if not _control_free(name):
        raise InvalidArgument("invalid name", [(field, "must not contain control characters")])
    return name


def check_id(author_id: int, field: str = "id") -> int:
    """`author_id`, if it can name an author (ids start at 1)."""
    if author_id < 1:
        raise InvalidArgument("invalid id", [(field, "must be a positive integer")])
    return author_id


def check_lookups(author_ids: Sequence[int]) -> None:
    """`InvalidArgument` unless there are 1..100 ids, each of which can name an author."""
    if not 1 <= len(author_ids) <= MAX_BATCH_GET:
        raise InvalidArgument(
            "invalid lookups", [("lookups", f"must hold between 1 and {MAX_BATCH_GET} lookups")]
        )
    for i, author_id in enumerate(author_ids):
        check_id(author_id, field=f"lookups[{i}].id")


def clean_filter(raw: AuthorFilter) -> AuthorFilter:
    """`raw` with a trimmed name, or `InvalidArgument` naming every bad field."""
    violations: list[tuple[str, str]] = []
    if raw.id is not None and raw.id < 1:
        violations.append(("filter.id", "must be a positive integer"))
    name = raw.name.strip() if raw.name is not None else None
    if name is not None and (len(name) > NAME_MAX or not _control_free(name)):
        violations.append(("filter.name", f"must be at most {NAME_MAX} printable characters"))
    if raw.search is not None and (len(raw.search) > NAME_MAX or not _control_free(raw.search)):
        violations.append(("filter.search", f"must be at most {NAME_MAX} printable characters"))
    if violations:
        raise InvalidArgument("invalid filter", violations)
    return AuthorFilter(id=raw.id, name=name, search=raw.search)


# The row offset a page may start at (PostgreSQL's OFFSET as a 32-bit bind parameter).
MAX_OFFSET = 2**31 - 1


def check_page(page: OffsetPage | CursorPage) -> None:
    """`InvalidArgument` unless the page number is positive and per_page is 1..1000."""
    prefix = "offset" if isinstance(page, OffsetPage) else "cursor"
    violations: list[tuple[str, str]] = []
    if isinstance(page, OffsetPage) and page.page < 1:
        violations.append(("offset.page", "must be at least 1"))
    elif isinstance(page, OffsetPage) and (page.page - 1) * max(page.per_page, 1) > MAX_OFFSET:
        violations.append(("offset.page", f"skips more than {MAX_OFFSET} rows"))
    if not 1 <= page.per_page <= PER_PAGE_MAX:
        violations.append((f"{prefix}.per_page", f"must be between 1 and {PER_PAGE_MAX}"))
    if violations:
        raise InvalidArgument("invalid page", violations)
