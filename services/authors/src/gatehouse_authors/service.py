"""The gRPC servicer: protobuf in, commands, protobuf out. No rules and no SQL here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatehouse_authors.commands import AuthorCommands
from gatehouse_authors.domain import (
    AuthorFilter,
    CursorPage,
    OffsetPage,
    author_message,
    fill_author,
)
from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2

if TYPE_CHECKING:
    import grpc

    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = authors_pb2.DESCRIPTOR.services_by_name["AuthorsService"].full_name


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
