"""Configuration shared by every service, read from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every Gatehouse process has; services subclass it with their own prefix.

    Each field may be set by an environment variable of the subclass's prefix
    (e.g. `AUTHORS_GRPC_PORT`), falling back to the defaults here.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    profile: Literal["development", "production"] = Field(
        default="development", validation_alias="GATEHOUSE_PROFILE"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(default=True, validation_alias="LOG_JSON")
    # Lines below warning are written in batches at most this old (gatehouse_kit.logging).
    log_flush_seconds: float = Field(default=0.1, ge=0, le=5, validation_alias="LOG_FLUSH_SECONDS")
    # Distributed tracing (docs/tracing.md): spans over OTLP/gRPC to the collector at
    # `TRACING_OTLP_ENDPOINT`; sampled at the edge at `TRACING_SAMPLE_RATIO`.
    tracing_enabled: bool = Field(default=True, validation_alias="TRACING_ENABLED")
    tracing_otlp_endpoint: str = Field(
        default="http://127.0.0.1:4317", validation_alias="TRACING_OTLP_ENDPOINT"
    )
    tracing_sample_ratio: float = Field(
        default=0.01, ge=0, le=1, validation_alias="TRACING_SAMPLE_RATIO"
    )
    bind_host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0
    # Seconds that in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = 10.0
