"""Keycloak access tokens: verification against the realm's JWKS, and who the caller is."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog
from prometheus_client import Counter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from gatehouse_gateway.errors import ApiError, authentication_failed, service_unavailable
from gatehouse_gateway.settings import Settings

log = structlog.get_logger(__name__)

TOKEN_VALIDATIONS = Counter(
    "auth_token_validations_total",
    "Bearer tokens checked, by result (valid, cached, expired, invalid, unavailable).",
    ["status"],
)
JWKS_FETCH_FAILURES = Counter(
    "auth_jwks_fetch_failures_total",
    "Fetches of the identity provider's key set that failed (including refusals by the "
    "open circuit breaker).",
)

_JWKS_BREAKER = "jwks"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, from a verified access token."""

    user_id: str
    username: str
    roles: frozenset[str]
    expires_at: float


def _digest(token: str) -> bytes:
    """The key of a verified token in the cache: 128 bits of BLAKE2b, not the token."""
    return hashlib.blake2b(token.encode(), digest_size=16).digest()


class _KeySetUnavailable(Exception):
    """The key set could not be fetched (network, status, payload or open breaker)."""


class TokenVerifier:
    """Verifies RS-family JWTs issued by the configured Keycloak realm for our client.

    Keys come from the JWKS endpoint, cached; an unknown `kid` triggers a refetch at most
    once per `jwks_refetch_interval_seconds`, so forged `kid`s cannot hammer Keycloak.
    Verified tokens are remembered until they expire (LRU-bounded), so repeated calls
    with the same token skip the signature check; the memory is keyed by a digest of the
    token, so no token is held beyond its request.
    """

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._fetch_lock = asyncio.Lock()
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=3, default_ttl=settings.jwks_refetch_interval_seconds
        )

    async def aclose(self) -> None:
        """Close the HTTP client used for key fetches."""
        await self._client.aclose()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid `token`.

        Raises `ApiError` 401 `authentication_failed` for any invalid token, and 503
        `service_unavailable` when the signing key is unknown and the key set cannot be
        fetched.
        """
        digest = _digest(token)
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at > time.time() - self._settings.token_leeway_seconds:
                self._cache.move_to_end(digest)
                TOKEN_VALIDATIONS.labels("cached").inc()
                return cached
            del self._cache[digest]
        try:
            principal = await self._verify(token)
        except ApiError as error:
            TOKEN_VALIDATIONS.labels(
                "unavailable" if error.status == 503 else _failure_status(error)
            ).inc()
            raise
        TOKEN_VALIDATIONS.labels("valid").inc()
        self._remember(digest, principal)
        return principal

    def _remember(self, digest: bytes, principal: Principal) -> None:
        self._cache[digest] = principal
        if len(self._cache) > self._settings.token_cache_size:
            self._cache.popitem(last=False)

    async def _verify(self, token: str) -> Principal:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise authentication_failed("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in settings.allowed_algorithms:
            raise authentication_failed("token algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise authentication_failed("token has no key id")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(algorithm)],
                issuer=settings.issuer,
                leeway=settings.token_leeway_seconds,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise authentication_failed("token expired") from None
        except jwt.ImmatureSignatureError:
            raise authentication_failed("token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise authentication_failed("token issuer not accepted") from None
        except jwt.PyJWTError:
            raise authentication_failed("invalid token") from None
        if not _for_client(claims, settings.client_id):
            raise authentication_failed("token not issued for this client")
        return _principal(claims, settings.client_id)

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._fetch_lock:
            # Another waiter may have fetched the key set meanwhile.
            key = self._keys.get(kid)
            if key is None and self._may_refetch():
                await self._refresh()
                key = self._keys.get(kid)
        if key is None:
            raise authentication_failed("unknown signing key")
        return key

    def _may_refetch(self) -> bool:
        elapsed = time.monotonic() - self._fetched_at
        return not self._keys or elapsed >= self._settings.jwks_refetch_interval_seconds

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        breaker = await self._breakers.get_breaker(_JWKS_BREAKER)
        try:
            async with breaker:
                keys = await self._fetch()
        except (OpenedState, _KeySetUnavailable) as error:
            JWKS_FETCH_FAILURES.inc()
            log.warning("jwks_fetch_failed", reason=str(error))
            if not self._keys:
                raise service_unavailable("identity provider") from None
            return
        self._keys = keys
        log.info("jwks_fetched", keys=len(keys))

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            response = await self._client.get(self._settings.jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise _KeySetUnavailable(type(error).__name__) from None
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if entry.get("use", "sig") != "sig" or entry.get("kty") != "RSA":
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except (jwt.PyJWTError, KeyError):
                continue
        if not keys:
            raise _KeySetUnavailable("no usable signing keys")
        return keys


def _failure_status(error: ApiError) -> str:
    return "expired" if error.msg == "token expired" else "invalid"


def _for_client(claims: dict[str, Any], client_id: str) -> bool:
    # Keycloak puts the requesting client in `azp`; `aud` names the resource servers.
    if claims.get("azp") == client_id:
        return True
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience or []
    return client_id in audiences


def _principal(claims: dict[str, Any], client_id: str) -> Principal:
    # This API's own client roles, whichever client of the realm the token was issued to
    # (azp): the console's and services' tokens carry them for their audience.
    roles: set[str] = set()
    client = (claims.get("resource_access") or {}).get(client_id) or {}
    roles.update(r for r in client.get("roles", []) if isinstance(r, str))
    realm = claims.get("realm_access") or {}
    roles.update(r for r in realm.get("roles", []) if isinstance(r, str))
    return Principal(
        user_id=str(claims["sub"]),
        username=str(claims.get("preferred_username") or claims["sub"]),
        roles=frozenset(roles),
        expires_at=float(claims["exp"]),
    )
