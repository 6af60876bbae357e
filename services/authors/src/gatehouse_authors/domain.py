"""The author domain's values, and their protobuf form (shared by replies and events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gatehouse_protos.authors.v1 import authors_pb2


@dataclass(frozen=True, slots=True)
class Author:
    """One stored author; `version` grows by one on every update."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class AuthorFilter:
    """What a listing matches: all given conditions at once."""

    id: int | None = None
    name: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetPage:
    """Page `page` (1-based) of `per_page` authors."""

    page: int
    per_page: int


@dataclass(frozen=True, slots=True)
class CursorPage:
    """`per_page` authors after the position `cursor` names ("" for the first page)."""

    cursor: str
    per_page: int


@dataclass(frozen=True, slots=True)
class Total:
    """How many authors match; `estimated` when it comes from planner statistics."""

    count: int
    estimated: bool


@dataclass(frozen=True, slots=True)
class AuthorPage:
    """One page of a listing and what a caller needs to continue it."""

    authors: list[Author]
    page: int
    per_page: int
    total: Total
    next_cursor: str

    @property
    def has_more(self) -> bool:
        return bool(self.next_cursor)

    @property
    def pages(self) -> int:
        return -(-self.total.count // self.per_page)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_timestamp(stamp: Timestamp, moment: datetime) -> None:
    # Integer arithmetic, and in place: Timestamp.FromDatetime plus a message copy per
    # field was most of the CPU a 50-author page cost.
    delta = moment - _EPOCH
    stamp.seconds = delta.days * 86_400 + delta.seconds
    stamp.nanos = delta.microseconds * 1_000


def fill_author(message: authors_pb2.Author, author: Author) -> None:
    """Write `author` into `message` (for example a repeated field's new element)."""
    message.id = author.id
    message.name = author.name
    message.version = author.version
    _set_timestamp(message.created_at, author.created_at)
    _set_timestamp(message.updated_at, author.updated_at)


def author_message(author: Author) -> authors_pb2.Author:
    """The protobuf form of `author`."""
    message = authors_pb2.Author()
    fill_author(message, author)
    return message
