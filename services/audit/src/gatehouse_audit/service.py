"""The AuditService gRPC servicer: transport only (pipeline, queries and rows do the work)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import grpc

from gatehouse_audit.events import from_record, to_rows
from gatehouse_audit.pipeline import AuditBatchWriter
from gatehouse_audit.query import SortKey, encode_cursor, parse_query
from gatehouse_audit.repository import AuditRepository
from gatehouse_kit.errors import InvalidArgument, NotFound, ServiceError
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """Ingest (acknowledged once committed), query and get audit events."""

    def __init__(self, writer: AuditBatchWriter, repository: AuditRepository) -> None:
        self._writer = writer
        self._repository = repository

    async def IngestBatchUnary(
        self, request: audit_pb2.IngestBatch, context: Context
    ) -> audit_pb2.IngestAck:
        rows, dead = to_rows(request.events)
        if rows or dead:
            await asyncio.shield(await self._writer.submit(rows, dead))
        return audit_pb2.IngestAck(sequence=request.sequence, accepted=len(rows) + len(dead))

    async def IngestStream(
        self, request_iterator: AsyncIterator[audit_pb2.IngestBatch], context: Context
    ) -> AsyncIterator[audit_pb2.IngestAck]:
        """Acks in the order batches arrived; ends once shutdown began and all are answered."""
        pending: asyncio.Queue[Awaitable[audit_pb2.IngestAck] | ServiceError | None] = (
            asyncio.Queue()
        )

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    await pending.put(await self._admit(batch))
            except ServiceError as error:
                # A bad message ends the stream with its status, after the earlier acks.
                await pending.put(error)
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        stopping = asyncio.create_task(self._writer.stopped_accepting.wait())
        try:
            while True:
                if stopping.done() and pending.empty():
                    return
                getter = asyncio.create_task(pending.get())
                await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                item = getter.result()
                if item is None:
                    return
                if isinstance(item, ServiceError):
                    raise item
                yield await item
        finally:
            reader.cancel()
            stopping.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if asyncio.iscoroutine(left):
                    left.close()

    async def _admit(self, batch: audit_pb2.IngestBatch) -> Awaitable[audit_pb2.IngestAck]:
        """Queue a streamed batch; the result awaits its ack (or is a refusal at once)."""
        try:
            rows, dead = to_rows(batch.events)
            done = await self._writer.submit(rows, dead) if rows or dead else None
        except ServiceError as error:
            return _answer(_refusal(batch.sequence, error))
        return self._ack_when(batch.sequence, len(rows) + len(dead), done)

    async def _ack_when(
        self, sequence: int, count: int, done: asyncio.Future[None] | None
    ) -> audit_pb2.IngestAck:
        if done is not None:
            try:
                await asyncio.shield(done)
            except ServiceError as error:
                return _refusal(sequence, error)
        return audit_pb2.IngestAck(sequence=sequence, accepted=count)

    async def QueryEvents(
        self, request: audit_pb2.QueryEventsRequest, context: Context
    ) -> audit_pb2.QueryEventsResponse:
        query = parse_query(request)
        page = await self._repository.query(query)
        next_cursor = ""
        if page.has_more and page.records:
            last = page.records[-1]
            next_cursor = encode_cursor(SortKey(last["timestamp"], last["id"]), query.filter)
        return audit_pb2.QueryEventsResponse(
            events=[from_record(r) for r in page.records],
            meta=pagination_pb2.PageMeta(
                page=query.page,
                per_page=query.per_page,
                total=page.total,
                total_is_estimate=page.total_is_estimate,
                pages=-(-page.total // query.per_page),
                next_cursor=next_cursor,
                has_more=page.has_more,
            ),
        )

    async def GetEvent(
        self, request: audit_pb2.GetEventRequest, context: Context
    ) -> audit_pb2.AuditEvent:
        if request.id <= 0:
            raise InvalidArgument("invalid id", [("id", "must be positive")])
        record = await self._repository.get(request.id)
        if record is None:
            raise NotFound(f"audit event {request.id} not found")
        return from_record(record)


def _refusal(sequence: int, error: ServiceError) -> audit_pb2.IngestAck:
    return audit_pb2.IngestAck(sequence=sequence, code=error.code.value[0], message=error.message)


async def _answer(ack: audit_pb2.IngestAck) -> audit_pb2.IngestAck:
    return ack
