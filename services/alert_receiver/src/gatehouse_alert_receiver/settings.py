"""The alert receiver's configuration, read from `ALERT_RECEIVER_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.settings import ServiceSettings


class Settings(ServiceSettings):
    """`ALERT_RECEIVER_<FIELD>` overrides a default (`ALERT_RECEIVER_BIND_HOST`, ...)."""

    model_config = SettingsConfigDict(env_prefix="ALERT_RECEIVER_", extra="ignore", frozen=True)

    # One port for the webhook, the notifications and /metrics.
    http_port: int = 9095
    # How many notifications are kept; older ones are forgotten (they stay in the log).
    keep: int = Field(default=200, ge=1)
