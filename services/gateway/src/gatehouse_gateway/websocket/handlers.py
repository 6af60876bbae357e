"""What each request pkg_id needs (role, data schema) and does (an operation).

Handlers call `gatehouse_gateway.operations`, as the HTTP routes do, so both doors give
the same answers; the role of each pkg_id is the role of its HTTP route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gatehouse_gateway import operations
from gatehouse_gateway.cache import AuthorCache
from gatehouse_gateway.rbac import Role
from gatehouse_gateway.schemas import MAX_ID, MAX_PAGE, AuthorName
from gatehouse_gateway.upstreams import Upstreams
from gatehouse_gateway.websocket.protocol import PkgId
from gatehouse_kit.change_stream import OFFSET_PATTERN


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


# JSON integers only (not 7.0, "7" or true), within the bounds the services take.
AuthorId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
PageNumber = Annotated[int, Field(strict=True, ge=1, le=MAX_PAGE)]
PerPage = Annotated[int, Field(strict=True, ge=1, le=operations.MAX_PER_PAGE)]


class AuthorFilterData(_Data):
    """`data` of GET_AUTHORS: the filters of GET /authors."""

    id: AuthorId | None = None
    name: str | None = None
    search: str | None = None

    def filter(self) -> operations.AuthorFilter:
        return operations.AuthorFilter(id=self.id, name=self.name, search=self.search)


class AuthorPageData(AuthorFilterData):
    """`data` of GET_PAGINATED_AUTHORS: filters plus `page`/`per_page` or `cursor`."""

    page: PageNumber = 1
    per_page: PerPage = operations.DEFAULT_PER_PAGE
    cursor: str | None = None


class AuthorNameData(_Data):
    """`data` of CREATE_AUTHOR."""

    name: AuthorName


class AuthorIdData(_Data):
    """`data` of GET_AUTHOR and DELETE_AUTHOR."""

    id: AuthorId


class AuthorUpdateData(_Data):
    """`data` of UPDATE_AUTHOR."""

    id: AuthorId
    name: AuthorName


class NoData(_Data):
    """`data` of UNSUBSCRIBE_AUTHORS (empty)."""


class SubscribeData(_Data):
    """`data` of SUBSCRIBE_AUTHORS: with an `offset` ("" for now on), recoverable."""

    offset: Annotated[str, Field(strict=True, pattern=f"^({OFFSET_PATTERN})?$")] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handler's success: the response `data` and, for pages, its `meta`."""

    data: Any
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler may use: the upstreams, the edge cache and the subscription switch
    of its socket."""

    upstreams: Upstreams
    cache: AuthorCache
    subscribe: Callable[[str | None], Awaitable[dict[str, Any]]]
    unsubscribe: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Handler:
    """A request pkg_id: the role it demands, the schema of its data, and its action."""

    role: Role
    schema: type[_Data]
    run: Callable[[Call, Any], Awaitable[Outcome]]


def resource(pkg_id: PkgId, data: dict[str, Any]) -> str:
    """The audited resource of a request: the matching HTTP path."""
    author_id = data.get("id")
    if pkg_id in (PkgId.GET_AUTHOR, PkgId.UPDATE_AUTHOR, PkgId.DELETE_AUTHOR) and isinstance(
        author_id, int
    ):
        return f"/authors/{author_id}"
    if pkg_id is PkgId.GET_PAGINATED_AUTHORS:
        return "/authors/paginated"
    return "/authors"


async def _get_authors(call: Call, data: AuthorFilterData) -> Outcome:
    return Outcome(await operations.list_authors(call.upstreams, data.filter()))


async def _get_paginated_authors(call: Call, data: AuthorPageData) -> Outcome:
    page = await operations.list_authors_page(
        call.upstreams,
        data.filter(),
        operations.Pagination(page=data.page, per_page=data.per_page, cursor=data.cursor),
    )
    return Outcome(page["items"], page["meta"])


async def _create_author(call: Call, data: AuthorNameData) -> Outcome:
    return Outcome((await operations.create_author(call.upstreams, call.cache, data.name)).data)


async def _update_author(call: Call, data: AuthorUpdateData) -> Outcome:
    return Outcome(
        (await operations.update_author(call.upstreams, call.cache, data.id, data.name)).data
    )


async def _delete_author(call: Call, data: AuthorIdData) -> Outcome:
    await operations.delete_author(call.upstreams, call.cache, data.id)
    return Outcome({"id": data.id})


async def _get_author(call: Call, data: AuthorIdData) -> Outcome:
    return Outcome((await operations.get_author(call.upstreams, call.cache, data.id)).data)


async def _subscribe(call: Call, data: SubscribeData) -> Outcome:
    return Outcome(await call.subscribe(data.offset))


async def _unsubscribe(call: Call, data: NoData) -> Outcome:
    call.unsubscribe()
    return Outcome({"subscribed": False})


HANDLERS: dict[PkgId, Handler] = {
    PkgId.GET_AUTHORS: Handler(Role.GET_AUTHORS, AuthorFilterData, _get_authors),
    PkgId.GET_PAGINATED_AUTHORS: Handler(Role.GET_AUTHORS, AuthorPageData, _get_paginated_authors),
    PkgId.CREATE_AUTHOR: Handler(Role.CREATE_AUTHOR, AuthorNameData, _create_author),
    PkgId.UPDATE_AUTHOR: Handler(Role.UPDATE_AUTHOR, AuthorUpdateData, _update_author),
    PkgId.DELETE_AUTHOR: Handler(Role.DELETE_AUTHOR, AuthorIdData, _delete_author),
    PkgId.GET_AUTHOR: Handler(Role.GET_AUTHORS, AuthorIdData, _get_author),
    PkgId.SUBSCRIBE_AUTHORS: Handler(Role.GET_AUTHORS, SubscribeData, _subscribe),
    PkgId.UNSUBSCRIBE_AUTHORS: Handler(Role.GET_AUTHORS, NoData, _unsubscribe),
}
