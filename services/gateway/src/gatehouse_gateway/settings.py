"""The gateway's configuration, read from `GATEWAY_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from gatehouse_kit.settings import ServiceSettings

# Asymmetric signatures only: `none` and the HMAC family would let anyone holding the
# (public) key material mint tokens.
SAFE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})

CommaList = Annotated[tuple[str, ...], NoDecode]

# The cross-origin callers the development profile allows unless told otherwise: a web
# front-end's development server on this machine (Vite's default port).
DEVELOPMENT_CORS_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173")


def _split(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a sequence from code."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(ServiceSettings):
    """Every knob of the gateway; `GATEWAY_<FIELD>` overrides a default.

    Lists (`allowed_algorithms`, `trusted_proxies`, `ws_allowed_origins`, `cors_*`) are
    read from the environment as comma-separated values.
    """

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    http_port: int = 8000
    metrics_port: int = 9100

    # Tokens: issuer as the clients see Keycloak (through Traefik), keys fetched directly.
    issuer: str = "http://localhost:8080/auth/realms/gatehouse"
    jwks_url: str = "http://127.0.0.1:8180/auth/realms/gatehouse/protocol/openid-connect/certs"
    client_id: str = "gatehouse-web"
    allowed_algorithms: CommaList = ("RS256",)
    # Clock skew tolerated on exp/nbf.
    token_leeway_seconds: float = 5.0
    token_cache_size: int = 10_000
    # An unknown `kid` refetches the key set at most this often.
    jwks_refetch_interval_seconds: float = 10.0
    jwks_timeout_seconds: float = 3.0

    # Upstreams: Traefik's grpc entrypoint routes on :authority; set a target to a
    # service's own address (and the authority to empty) to call it directly.
    authors_target: str = "127.0.0.1:8081"
    authors_authority: str = "authors"
    audit_target: str = "127.0.0.1:8081"
    audit_authority: str = "audit"
    ratelimit_target: str = "127.0.0.1:8081"
    ratelimit_authority: str = "ratelimit"
    upstream_deadline_seconds: float = 3.0
    ratelimit_deadline_seconds: float = 0.5
    # Attempts (first try included) for idempotent reads; writes are tried once.
    upstream_read_attempts: int = 3
    breaker_failure_threshold: int = 5
    breaker_open_seconds: float = 5.0

    redis_url: str = "redis://127.0.0.1:6379/0"
    # The Redis Stream of author changes (docs/authors.md, Change events), read by every
    # replica for its edge cache and WebSocket broadcasts: how long one XREAD waits for
    # new entries, and how much longer a Redis call may take before it counts as lost.
    authors_stream: str = "gatehouse:authors:stream"
    change_stream_block_seconds: float = Field(default=5.0, gt=0)
    change_stream_timeout_seconds: float = Field(default=2.0, gt=0)
    # The edge cache of author reads (docs/performance.md, Edge cache): its bound, and the
    # longest an entry is served when its change event was lost. 0 entries: no cache.
    author_cache_max_entries: int = Field(default=10_000, ge=0)
    author_cache_ttl_seconds: float = Field(default=5.0, gt=0)

    trusted_proxies: CommaList = ("127.0.0.1/32", "::1/128")
    max_body_bytes: int = 1024 * 1024
    # When the ratelimit service cannot be reached: "open" lets requests through,
    # "closed" answers 503. Unset: open in development, closed in production.
    rate_limit_fail_mode: Literal["open", "closed"] | None = None

    audit_buffer_capacity: int = 10_000
    # Refused requests (400 invalid_data, 401, 403, 413, 429) are audited at most once per
    # client, user, reason and route in this window, with the count of the others
    # (docs/audit.md, Refused requests); beyond this many keys, clients share one.
    audit_refusal_window_seconds: float = Field(default=10.0, gt=0)
    audit_refusal_max_clients: int = Field(default=10_000, ge=1)

    # After SIGTERM the process goes on serving this long while /health/live answers 503,
    # so that Traefik takes it out of rotation before its port closes. Keep it above
    # Traefik's health-check interval plus timeout (deploy/traefik/dynamic/gatehouse.yml).
    # `shutdown_grace_seconds` then bounds closing sockets and in-flight requests.
    shutdown_drain_seconds: float = Field(default=4.0, ge=0)

    # An idle keep-alive connection from Traefik is kept this long. Traefik drops its idle
    # upstream connections sooner (serversTransport idleConnTimeout, deploy/traefik/traefik.yml),
    # so it never sends a request on a connection this side is closing: a write sent there
    # would get a bare 502, as it is not retried.
    keep_alive_seconds: int = Field(default=75, ge=1)

    # Cross-origin requests from browsers (docs/api.md, Cross-origin requests): the origins
    # allowed to call the HTTP API. Unset: a web front-end's development server on this
    # machine (port 5173) in development, none in production; empty: none.
    cors_allowed_origins: Annotated[tuple[str, ...] | None, NoDecode] = None
    cors_allowed_methods: CommaList = ("GET", "POST", "PUT", "DELETE")
    # Request headers a cross-origin script may send beyond the CORS-safelisted ones.
    cors_allowed_headers: CommaList = (
        "Authorization",
        "Content-Type",
        "If-Match",
        "If-None-Match",
        "X-Request-ID",
    )
    # How long a browser may keep a preflight's answer.
    cors_max_age_seconds: int = Field(default=600, ge=0)

    ws_allowed_origins: CommaList = ("http://localhost:8080", "http://127.0.0.1:8080")
    ws_max_frame_bytes: int = 64 * 1024
    ws_send_queue_size: int = 64
    # Authenticated sockets one gateway process holds at most; more are refused with 503.
    ws_max_connections: int = Field(default=12_000, ge=1)
    ws_auth_timeout_seconds: float = 5.0

    @field_validator(
        "allowed_algorithms",
        "trusted_proxies",
        "ws_allowed_origins",
        "cors_allowed_origins",
        "cors_allowed_methods",
        "cors_allowed_headers",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("allowed_algorithms")
    @classmethod
    def _only_asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unsafe = set(value) - SAFE_ALGORITHMS
        if unsafe or not value:
            raise ValueError(f"allowed_algorithms must be among {sorted(SAFE_ALGORITHMS)}")
        return value

    @property
    def rate_limit_fails_open(self) -> bool:
        """Whether requests pass when the ratelimit service cannot be reached."""
        if self.rate_limit_fail_mode is not None:
            return self.rate_limit_fail_mode == "open"
        return self.profile == "development"

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """The origins allowed to make cross-origin requests (none: CORS is off)."""
        if self.cors_allowed_origins is not None:
            return self.cors_allowed_origins
        if self.profile == "development":
            return DEVELOPMENT_CORS_ORIGINS
        return ()
