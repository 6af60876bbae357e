"""The shapes of docs/api.md as typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Author:
    """`{id, name, created_at, updated_at}`; `etag` when the answer carried one (HTTP)."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime
    etag: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], etag: str | None = None) -> Author:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            created_at=_time(data["created_at"]),
            updated_at=_time(data["updated_at"]),
            etag=etag,
        )


@dataclass(frozen=True)
class PageMeta:
    """`meta` of a paginated answer."""

    page: int
    per_page: int
    total: int
    pages: int
    next_cursor: str | None
    has_more: bool
    total_is_estimate: bool

    @classmethod
    def from_json(cls, meta: Mapping[str, Any]) -> PageMeta:
        return cls(
            page=int(meta.get("page") or 0),
            per_page=int(meta.get("per_page") or 0),
            total=int(meta.get("total") or 0),
            pages=int(meta.get("pages") or 0),
            next_cursor=meta.get("next_cursor") or None,
            has_more=bool(meta.get("has_more")),
            total_is_estimate=bool(meta.get("total_is_estimate")),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: its items and `meta`."""

    items: list[T]
    meta: PageMeta


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
