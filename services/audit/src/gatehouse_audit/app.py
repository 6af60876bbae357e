"""The audit service assembled: database pool, pipeline, retention, gRPC server, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import structlog

from gatehouse_audit.migrate import upgrade
from gatehouse_audit.pipeline import AuditBatchWriter
from gatehouse_audit.repository import AuditRepository
from gatehouse_audit.retention import AuditRetention
from gatehouse_audit.service import SERVICE_NAME, AuditServicer
from gatehouse_audit.settings import Settings
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_protos.audit.v1 import audit_pb2_grpc

log = structlog.get_logger(__name__)


class AuditApp:
    """One running audit service; `stop()` is the graceful shutdown of SIGTERM.

    Shutdown order: refuse new batches (open ingest streams end once their pending
    batches are acknowledged), let in-flight calls finish, then write what is still
    queued; the whole within `shutdown_grace_seconds`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository: AuditRepository | None = None
        self.writer: AuditBatchWriter | None = None
        self.grpc: GrpcService | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._deadline = 0.0

    @property
    def port(self) -> int:
        assert self.grpc is not None
        return self.grpc.port

    async def start(self) -> None:
        s = self.settings
        if s.migrate_on_start:
            await asyncio.to_thread(upgrade, s.database_url)
        self.repository = await AuditRepository.connect(
            s.database_url,
            max_size=s.writers + 4,
            connect_timeout=s.db_connect_timeout_seconds,
            command_timeout=s.db_command_timeout_seconds,
            count_limit=s.count_limit,
        )
        self.writer = AuditBatchWriter(
            self.repository,
            capacity=s.queue_capacity,
            batch_size=s.batch_size,
            batch_interval=s.batch_interval_ms / 1000,
            writers=s.writers,
            retry_attempts=s.write_retry_attempts,
            retry_initial=s.write_retry_initial_seconds,
            retry_max=s.write_retry_max_seconds,
        )
        self.writer.start()
        retention = AuditRetention(
            self.repository,
            days=s.retention_days,
            interval=s.retention_interval_seconds,
            batch_size=s.retention_delete_batch_size,
        )
        self._retention_task = asyncio.create_task(retention.run(), name="audit-retention")
        servicer = AuditServicer(self.writer, self.repository)

        def register(server: grpc.aio.Server) -> list[str]:
            audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
            return [SERVICE_NAME]

        self.grpc = GrpcService(
            register,
            host=s.bind_host,
            port=s.grpc_port,
            grace_seconds=s.shutdown_grace_seconds,
            on_drained=[self._flush],
        )
        await self.grpc.start()

    async def stop(self) -> None:
        """Stop accepting, drain calls, flush the queue, close the pool."""
        assert self.grpc is not None
        assert self.writer is not None
        self._deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        self.writer.stop_accepting()
        await self.grpc.stop()

    async def _flush(self) -> None:
        assert self.writer is not None
        assert self.repository is not None
        await self.writer.drain(self._deadline - time.monotonic())
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self.repository.close()
