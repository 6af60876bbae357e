"""The ratelimit service's settings, from `RATELIMIT_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.settings import ServiceSettings


class Settings(ServiceSettings):
    """Ports, Redis, rules file, fail mode and lease TTL of the ratelimit service."""

    model_config = SettingsConfigDict(
        env_prefix="RATELIMIT_", extra="ignore", frozen=True, populate_by_name=True
    )

    grpc_port: int = 7053
    metrics_port: int = 9103
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Relative paths are looked up in the working directory, then in the source checkout.
    rules_path: Path = Path("deploy/ratelimit/rules.yaml")
    # Unset: closed in the production profile, open in development.
    fail_mode: Literal["open", "closed"] | None = Field(
        default=None, validation_alias=AliasChoices("RATELIMIT_FAIL_MODE", "RATE_LIMIT_FAIL_MODE")
    )
    # A decision waits at most this long for Redis before the fail mode applies.
    redis_timeout_ms: int = Field(default=100, ge=1)
    redis_max_connections: int = Field(default=64, ge=1)
    key_prefix: str = "ratelimit:"
    lease_ttl_seconds: float = Field(default=30.0, gt=0)
    # The longest a quota grant may be spent (a tenth of its window at most): a rules
    # change reaches callers deciding locally within it.
    quota_lease_ms: int = Field(default=1000, ge=1)
    rules_reload_debounce_ms: int = Field(default=200, ge=1)

    @property
    def effective_fail_mode(self) -> Literal["open", "closed"]:
        """The configured fail mode, else the profile's default."""
        if self.fail_mode is not None:
            return self.fail_mode
        return "closed" if self.profile == "production" else "open"
