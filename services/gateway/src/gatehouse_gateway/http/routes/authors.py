"""`/authors`: thin HTTP mapping onto the shared author operations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse

from gatehouse_gateway import operations
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_gateway.http.dependencies import (
    AuthorCreator,
    AuthorDeleter,
    AuthorReader,
    AuthorUpdater,
    Context,
    JsonBody,
)
from gatehouse_gateway.http.responses import RATE_LIMIT_HEADERS, api_errors
from gatehouse_gateway.operations import MAX_PER_PAGE, AuthorFilter, Pagination
from gatehouse_gateway.schemas import (
    MAX_ID,
    MAX_PAGE,
    PRINTABLE_PATTERN,
    Author,
    AuthorIn,
    AuthorPage,
)

router = APIRouter(prefix="/authors", tags=["authors"])

AuthorId = Annotated[int, Path(ge=1, le=MAX_ID, description="The author's id")]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Exact id")]
NameFilter = Annotated[
    str | None, Query(max_length=255, pattern=PRINTABLE_PATTERN, description="Exact name")
]
SearchFilter = Annotated[
    str | None,
    Query(
        max_length=255,
        pattern=PRINTABLE_PATTERN,
        description="Case-insensitive substring of the name",
    ),
]
IfMatch = Annotated[
    str | None,
    Header(description='Apply only if the author\'s current ETag matches (`"<version>"` or `*`)'),
]

IfNoneMatch = Annotated[
    str | None,
    Header(description='Answer 304 if the author\'s current ETag is among these (`"<version>"`)'),
]

_AUTHOR_BODY = JsonBody(AuthorIn)
AuthorBody = Annotated[AuthorIn, Depends(_AUTHOR_BODY)]

_ETAG = {"ETag": {"description": "The author's version", "schema": {"type": "string"}}}
# Authors are read with a bearer token: no shared cache may keep them, and a client's own
# cache revalidates each time (a 304 costs no body).
CACHE_CONTROL = "private, no-cache"
_CACHE_CONTROL = {"Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}}}


def _matches(if_none_match: str, etag: str) -> bool:
    """True when `If-None-Match` names `etag` (weak comparison, RFC 9110 13.1.2) or is `*`."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _expected_version(if_match: str | None) -> int | None:
    """The version an `If-Match` header demands; None when absent or `*`."""
    if if_match is None or if_match.strip() == "*":
        return None
    candidates = []
    for tag in if_match.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isdigit():
            candidates.append(int(tag))
    if len(candidates) != 1:
        # Nothing we issued can match an unparseable or multi-valued header.
        raise ApiError(
            412, ErrorCode.PRECONDITION_FAILED, "If-Match does not name a current version"
        )
    return candidates[0]


@router.get(
    "",
    response_model=list[Author],
    summary="List authors",
    description="Authors matching the filters, ordered by id, at most 1000. Role: get-authors.",
    responses={**api_errors(), 200: {"headers": RATE_LIMIT_HEADERS}},
)
async def list_authors(
    _: AuthorReader,
    context: Context,
    id: IdFilter = None,
    name: NameFilter = None,
    search: SearchFilter = None,
) -> Response:
    items = await operations.list_authors(
        context.upstreams, AuthorFilter(id=id, name=name, search=search)
    )
    return JSONResponse(items)


@router.get(
    "/paginated",
    response_model=AuthorPage,
    summary="List authors page by page",
    description="Offset pages (`page`, `per_page`) or, when `cursor` is given, cursor pages "
    "(stable under concurrent inserts). Role: get-authors.",
    responses={**api_errors(), 200: {"headers": RATE_LIMIT_HEADERS}},
)
async def list_authors_paginated(
    _: AuthorReader,
    context: Context,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = operations.DEFAULT_PER_PAGE,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="`meta.next_cursor` of the previous page")
    ] = None,
    id: IdFilter = None,
    name: NameFilter = None,
    search: SearchFilter = None,
) -> Response:
    result = await operations.list_authors_page(
        context.upstreams,
        AuthorFilter(id=id, name=name, search=search),
        Pagination(page=page, per_page=per_page, cursor=cursor),
    )
    return JSONResponse(result)


@router.post(
    "",
    status_code=201,
    response_model=Author,
    summary="Create an author",
    description="Role: create-author.",
    openapi_extra=_AUTHOR_BODY.openapi(),
    responses={
        **api_errors(409, 413),
        201: {
            "headers": {
                "Location": {"description": "The new author's URL", "schema": {"type": "string"}},
                **_ETAG,
            }
        },
    },
)
async def create_author(_: AuthorCreator, context: Context, body: AuthorBody) -> Response:
    author = await operations.create_author(context.upstreams, context.author_cache, body.name)
    return JSONResponse(
        author.data,
        status_code=201,
        headers={"Location": f"/authors/{author.data['id']}", "ETag": author.etag},
    )


@router.get(
    "/{id}",
    response_model=Author,
    summary="Get an author",
    description="Role: get-authors. With `If-None-Match` naming the current version, "
    "304 and no body.",
    responses={
        **api_errors(404),
        200: {"headers": {**_ETAG, **_CACHE_CONTROL}},
        304: {"description": "The author is still at the version named by If-None-Match"},
    },
)
async def get_author(
    _: AuthorReader, context: Context, id: AuthorId, if_none_match: IfNoneMatch = None
) -> Response:
    return await author_response(context, id, if_none_match)


async def author_response(
    context: GatewayContext, author_id: int, if_none_match: str | None
) -> Response:
    """GET /authors/{id}'s answer once the caller may have it: the author (from the edge
    cache when it holds it), or 304 when `If-None-Match` names its version. Also called
    by `gatehouse_gateway.http.author_reads`, the route's fast path."""
    author = await operations.get_author(context.upstreams, context.author_cache, author_id)
    headers = {"ETag": author.etag, "Cache-Control": CACHE_CONTROL}
    if if_none_match is not None and _matches(if_none_match, author.etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(author.data, headers=headers)


@router.put(
    "/{id}",
    response_model=Author,
    summary="Rename an author",
    description="With `If-Match`, only if the author is still at that version. "
    "Role: update-author.",
    openapi_extra=_AUTHOR_BODY.openapi(),
    responses={**api_errors(404, 409, 412, 413), 200: {"headers": _ETAG}},
)
async def update_author(
    _: AuthorUpdater,
    context: Context,
    id: AuthorId,
    body: AuthorBody,
    if_match: IfMatch = None,
) -> Response:
    author = await operations.update_author(
        context.upstreams, context.author_cache, id, body.name, _expected_version(if_match)
    )
    return JSONResponse(author.data, headers={"ETag": author.etag})


@router.delete(
    "/{id}",
    status_code=204,
    response_class=Response,
    summary="Delete an author",
    description="With `If-Match`, only if the author is still at that version. "
    "Role: delete-author.",
    responses=api_errors(404, 412),
)
async def delete_author(
    _: AuthorDeleter, context: Context, id: AuthorId, if_match: IfMatch = None
) -> Response:
    await operations.delete_author(
        context.upstreams, context.author_cache, id, _expected_version(if_match)
    )
    return Response(status_code=204)
