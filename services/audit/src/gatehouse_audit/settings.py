"""The audit service's settings, from `AUDIT_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Configuration of the audit service (docs/audit.md lists every variable)."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore", frozen=True)

    grpc_port: int = 7052
    metrics_port: int = 9102
    database_url: str = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/audit"
    # Run the Alembic migrations at start-up (development); production runs
    # `python -m gatehouse_audit migrate` as a release step instead.
    migrate_on_start: bool = False

    # Events held (queued or being written) before ingestion answers RESOURCE_EXHAUSTED.
    queue_capacity: int = Field(default=50_000, ge=1)
    batch_size: int = Field(default=2_000, ge=1)
    batch_interval_ms: int = Field(default=50, ge=1)
    # Concurrent COPY writers, each with its own connection.
    writers: int = Field(default=2, ge=1)
    # Attempts at a batch that fails for a reason other than an unreachable database;
    # after the last one the batch is dropped (reason="write_failed").
    write_retry_attempts: int = Field(default=5, ge=1)
    write_retry_initial_seconds: float = Field(default=0.1, gt=0)
    write_retry_max_seconds: float = Field(default=5.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_command_timeout_seconds: float = Field(default=60.0, gt=0)

    retention_days: int = Field(default=90, ge=1)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    retention_delete_batch_size: int = Field(default=5_000, ge=1)
    # Above this many matching rows, a query's `total` is the planner's estimate.
    count_limit: int = Field(default=100_000, ge=1)
