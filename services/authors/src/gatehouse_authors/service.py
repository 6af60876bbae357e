"""The gRPC servicer: protobuf in, commands, protobuf out. No rules and no SQL here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from gatehouse_authors.commands import AuthorCommands
from gatehouse_authors.domain import (
    Author,
    AuthorFilter,
    CursorPage,
    OffsetPage,
    author_message,
    fill_author,
)
from gatehouse_kit.logging import request_id_var, sane_request_id
from gatehouse_kit.tracing import traceparent_var, valid_traceparent
from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2

if TYPE_CHECKING:
    import grpc

    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = authors_pb2.DESCRIPTOR.services_by_name["AuthorsService"].full_name

log = structlog.get_logger(__name__)


def _filter(message: authors_pb2.AuthorFilter) -> AuthorFilter:
    return AuthorFilter(
        id=message.id if message.HasField("id") else None,
        name=message.name if message.HasField("name") else None,
        search=message.search if message.HasField("search") else None,
    )


def _page(request: authors_pb2.ListAuthorsRequest) -> OffsetPage | CursorPage | None:
    chosen = request.WhichOneof("pagination")
    if chosen == "offset":
        return OffsetPage(page=request.offset.page, per_page=request.offset.per_page)
    if chosen == "cursor":
        return CursorPage(cursor=request.cursor.cursor, per_page=request.cursor.per_page)
    return None


def _version(message: Any) -> int | None:
    return int(message.expected_version) if message.HasField("expected_version") else None


def _log_lookups(lookups: Iterable[authors_pb2.AuthorLookup], authors: list[Author]) -> None:
    """One `batched_lookup` line per lookup made for another request than the call's,
    under that request's id and trace id, so that a query on either finds this service's
    part.

    A lookup without a request id, or with the call's own (which its `grpc_request` line
    already carries), costs two comparisons; one whose id is not sane gets no line.
    """
    call_id = request_id_var.get()
    found: set[int] | None = None
    for lookup in lookups:
        request_id = lookup.request_id
        if not request_id or request_id == call_id:
            continue
        if sane_request_id(request_id) != request_id:
            continue
        if found is None:
            found = {author.id for author in authors}
        # An explicit `request_id` outranks the call's, which the kit's processor only
        # adds to lines that have none; the line's trace id is the lookup's own.
        token = traceparent_var.set(valid_traceparent(lookup.traceparent))
        try:
            log.info(
                "batched_lookup",
                request_id=request_id,
                author_id=lookup.id,
                found=lookup.id in found,
            )
        finally:
            traceparent_var.reset(token)


class AuthorsServicer(authors_pb2_grpc.AuthorsServiceServicer):
    """gatehouse.authors.v1.AuthorsService over `AuthorCommands`."""

    def __init__(self, commands: AuthorCommands) -> None:
        self._commands = commands

    async def CreateAuthor(
        self, request: authors_pb2.CreateAuthorRequest, context: Context
    ) -> authors_pb2.Author:
        return author_message(await self._commands.create(request.name))

    async def GetAuthor(
        self, request: authors_pb2.GetAuthorRequest, context: Context
    ) -> authors_pb2.Author:
        return author_message(await self._commands.get(request.id))

    async def BatchGetAuthors(
        self, request: authors_pb2.BatchGetAuthorsRequest, context: Context
    ) -> authors_pb2.BatchGetAuthorsResponse:
        lookups = request.lookups
        authors = await self._commands.get_many([lookup.id for lookup in lookups])
        reply = authors_pb2.BatchGetAuthorsResponse()
        for author in authors:
            fill_author(reply.authors.add(), author)
        _log_lookups(lookups, authors)
        return reply

    async def ListAuthors(
        self, request: authors_pb2.ListAuthorsRequest, context: Context
    ) -> authors_pb2.ListAuthorsResponse:
        page = await self._commands.list_page(_filter(request.filter), _page(request))
        reply = authors_pb2.ListAuthorsResponse(
            meta=pagination_pb2.PageMeta(
                page=page.page,
                per_page=page.per_page,
                total=page.total.count,
                total_is_estimate=page.total.estimated,
                pages=page.pages,
                next_cursor=page.next_cursor,
                has_more=page.has_more,
            ),
        )
        for author in page.authors:
            fill_author(reply.authors.add(), author)
        return reply

    async def UpdateAuthor(
        self, request: authors_pb2.UpdateAuthorRequest, context: Context
    ) -> authors_pb2.Author:
        author = await self._commands.update(request.id, request.name, _version(request))
        return author_message(author)

    async def DeleteAuthor(
        self, request: authors_pb2.DeleteAuthorRequest, context: Context
    ) -> authors_pb2.DeleteAuthorResponse:
        await self._commands.delete(request.id, _version(request))
        return authors_pb2.DeleteAuthorResponse()
