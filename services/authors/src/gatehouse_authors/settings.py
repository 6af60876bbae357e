"""Configuration of the authors service, read from `AUTHORS_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.settings import ServiceSettings

# Only for development and tests; a deployment sets AUTHORS_CURSOR_SECRET.
DEVELOPMENT_CURSOR_SECRET = "gatehouse-development-cursor-secret"  # noqa: S105


class Settings(ServiceSettings):
    """Everything the authors service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="AUTHORS_", extra="ignore", frozen=True)

    grpc_port: int = 7051
    metrics_port: int = 9101
    database_url: str = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/authors"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The change stream (docs/authors.md, Change events) and its retention: an entry goes
    # once the stream holds more than max_events entries or it is older than max_age.
    stream: str = "gatehouse:authors:stream"
    stream_max_events: int = Field(default=100_000, ge=1)
    stream_max_age_seconds: float = Field(default=86_400.0, gt=0)
    # Outbox rows the relay publishes per pass; the longest it sleeps without a NOTIFY;
    # how often a replica without the relay lock tries to take it.
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    relay_standby_seconds: float = Field(default=1.0, gt=0)
    # A Redis call of the relay that takes longer fails (counted) and is retried.
    redis_timeout_seconds: float = Field(default=1.0, gt=0)
    # Statements slower than this are logged (truncated, without values) and counted.
    slow_query_seconds: float = 0.25
    pool_size: int = 10
    pool_max_overflow: int = 10
    # How long a call waits for a free pooled connection before UNAVAILABLE.
    pool_timeout_seconds: float = 5.0
    # A pooled connection idle longer than this is tested before use (see database.py).
    pool_ping_idle_seconds: float = 1.0
    connect_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 10.0
    cursor_secret: SecretStr = SecretStr(DEVELOPMENT_CURSOR_SECRET)
    # Up to this many matching rows a page's total is an exact count; beyond, a planner
    # estimate. Each page counts at most this many rows (+1), so it bounds a page's cost.
    exact_count_limit: int = 1_000
    # Unset: apply migrations at start in the development profile only.
    migrate_on_start: bool | None = None

    @property
    def migrates_on_start(self) -> bool:
        """Whether the service upgrades its database to the newest revision when it starts."""
        if self.migrate_on_start is None:
            return self.profile == "development"
        return self.migrate_on_start
