"""Cache-miss reads of single authors, gathered into `BatchGetAuthors` calls.

A read that finds no call under way starts one, which leaves on the event loop's next
turn with every read of the current turn. Reads that arrive while it is under way wait
for its answer and go together in the next call. Under light load each call holds one
read; under load the gRPC hop (the gateway's client call, Traefik's proxying, the
authors service's call handling) is paid once per call instead of once per read
(docs/performance.md, Cache misses). Nothing waits on a timer: a read waits at most for
the one call ahead of it.

Each lookup carries its client request's id and trace context, under which the authors
service logs it.
Sampled requests do not come here (`operations.get_author` sends them alone with
`GetAuthor`) so that their traces keep the authors service's spans.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_kit.logging import request_id_var
from gatehouse_kit.tracing import traceparent_var
from gatehouse_protos.authors.v1 import authors_pb2

if TYPE_CHECKING:
    from gatehouse_gateway.upstreams import Upstream

# The most lookups in one call (the authors service accepts up to 100).
MAX_BATCH = 100

# One waiting read: the id, its request id and traceparent ("" when none), and where its
# answer goes.
_Read = tuple[int, str, str, "asyncio.Future[authors_pb2.Author]"]


def not_found(author_id: int) -> ApiError:
    """The 404 of an author that does not exist, as `GetAuthor`'s NOT_FOUND maps to."""
    return ApiError(404, ErrorCode.NOT_FOUND, f"author {author_id} not found")


class AuthorBatches:
    """Reads of one author each, sent to the authors service in shared calls."""

    def __init__(self, upstream: Upstream, rpc: Any) -> None:
        self._upstream = upstream
        self._rpc = rpc
        self._waiting: list[_Read] = []
        # The task that sends the waiting reads, while there is one.
        self._sender: asyncio.Task[None] | None = None

    async def get(self, author_id: int) -> authors_pb2.Author:
        """The author `author_id`; `ApiError` 404 when there is none, or the call's error."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[authors_pb2.Author] = loop.create_future()
        self._waiting.append(
            (author_id, request_id_var.get() or "", traceparent_var.get() or "", answer)
        )
        if self._sender is None:
            self._sender = loop.create_task(self._send_waiting())
        return await answer

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                reads = [read for read in self._waiting[:MAX_BATCH] if not read[3].done()]
                del self._waiting[:MAX_BATCH]
                if reads:
                    await self._send(reads)
        finally:
            self._sender = None
            # Left only when cancelled (the gateway is stopping): none waits for ever.
            for read in self._waiting:
                read[3].cancel()
            self._waiting.clear()

    async def _send(self, reads: list[_Read]) -> None:
        # The call goes under the first read's request id and (unsampled) trace context.
        _, request_id, traceparent, _ = reads[0]
        request_id_var.set(request_id or None)
        traceparent_var.set(traceparent or None)
        request = authors_pb2.BatchGetAuthorsRequest(
            lookups=[
                authors_pb2.AuthorLookup(id=read[0], request_id=read[1], traceparent=read[2])
                for read in reads
            ]
        )
        try:
            reply = await self._upstream.call(self._rpc, request)
        except asyncio.CancelledError:
            # The gateway is stopping: no read is left waiting for ever.
            for read in reads:
                read[3].cancel()
            raise
        except ApiError as error:
            for read in reads:
                if not read[3].done():
                    # One instance each: every waiter raises (and extends) its own.
                    read[3].set_exception(
                        ApiError(error.status, error.code, error.msg, error.details, error.headers)
                    )
            return
        except Exception as error:
            for read in reads:
                if not read[3].done():
                    read[3].set_exception(error)
            return
        found = {author.id: author for author in reply.authors}
        for author_id, _, _, answer in reads:
            if answer.done():
                continue
            author = found.get(author_id)
            if author is None:
                answer.set_exception(not_found(author_id))
            else:
                answer.set_result(author)
