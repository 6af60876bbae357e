"""Access tokens from Keycloak: acquired, kept, refreshed before they expire.

Three ways in (docs/sdk.md, Tokens):

- `KeycloakTokens.password(...)`: the resource-owner password grant, for scripts run by
  a person (the realm's `gatehouse-web` client allows it);
- `KeycloakTokens.client_credentials(...)`: a confidential client's own identity, for
  services (the realm's `gatehouse-service` client);
- `authorization_request(...)` then `KeycloakTokens.from_authorization_code(...)`: the
  browser flow, authorization code with PKCE (S256), for a program that can open a
  browser and receive its redirect.

A token is reused until it has less than `margin` seconds left; then the refresh token
is used when there is one, else the grant is made again. The API client calls
`invalidate()` when the gateway refused a token, so the next call gets a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from gatehouse_client.errors import AuthenticationFailed, ServiceUnavailable

# Refreshed when less than this is left (the shipped realm's tokens live 300 s).
DEFAULT_MARGIN_SECONDS = 30.0


class TokenProvider(Protocol):
    """What the API clients need of tokens."""

    async def token(self) -> str:
        """An access token valid for a while yet."""
        ...

    def invalidate(self) -> None:
        """Forget the current access token (the platform refused it)."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """One access token given by the caller, never refreshed (tests, short scripts)."""

    access_token: str

    async def token(self) -> str:
        return self.access_token

    def invalidate(self) -> None:
        """Nothing to do: there is no other token to get."""


@dataclass(frozen=True)
class AuthorizationRequest:
    """A browser sign-in under way: open `url`, keep the rest for the redirect."""

    url: str
    state: str
    code_verifier: str
    redirect_uri: str


def _endpoint(issuer: str, name: str) -> str:
    return f"{issuer.rstrip('/')}/protocol/openid-connect/{name}"


def code_challenge(verifier: str) -> str:
    """The S256 PKCE challenge of `verifier` (RFC 7636, section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_request(
    issuer: str, client_id: str, redirect_uri: str, scope: str = "openid"
) -> AuthorizationRequest:
    """The URL that starts the authorization-code flow with PKCE, and what its end needs."""
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    query = urlencode(
        {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return AuthorizationRequest(
        url=f"{_endpoint(issuer, 'auth')}?{query}",
        state=state,
        code_verifier=verifier,
        redirect_uri=redirect_uri,
    )


class KeycloakTokens:
    """Tokens of one identity from the realm whose issuer URL is `issuer`
    (e.g. `http://localhost:8080/auth/realms/gatehouse`)."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        grant: dict[str, str] | None,
        *,
        client_secret: str | None = None,
        margin: float = DEFAULT_MARGIN_SECONDS,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = _endpoint(issuer, "token")
        self.client_id = client_id
        self._grant = grant
        self._secret = client_secret
        self._margin = margin
        self._http = http or httpx.AsyncClient(timeout=30)
        self._owns_http = http is None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._access: str | None = None
        self._access_until = 0.0
        self._refresh: str | None = None
        self._refresh_until = 0.0

    @classmethod
    def password(
        cls, issuer: str, client_id: str, username: str, password: str, **kwargs: Any
    ) -> KeycloakTokens:
        """The password grant, for scripts (never for a service's own identity)."""
        grant = {"grant_type": "password", "username": username, "password": password}
        return cls(issuer, client_id, {**grant, "scope": "openid"}, **kwargs)

    @classmethod
    def client_credentials(
        cls, issuer: str, client_id: str, client_secret: str, **kwargs: Any
    ) -> KeycloakTokens:
        """The client-credentials grant of a confidential client, for services."""
        return cls(
            issuer,
            client_id,
            {"grant_type": "client_credentials"},
            client_secret=client_secret,
            **kwargs,
        )

    @classmethod
    async def from_authorization_code(
        cls,
        issuer: str,
        client_id: str,
        request: AuthorizationRequest,
        callback_url: str,
        **kwargs: Any,
    ) -> KeycloakTokens:
        """End the browser flow: `callback_url` is where the browser was sent back to.

        The tokens are then kept fresh with the refresh token; once that expires (the
        realm's session), `token()` raises AuthenticationFailed: sign in again.
        """
        query = parse_qs(urlsplit(callback_url).query)
        if "error" in query:
            raise AuthenticationFailed(query.get("error_description", query["error"])[0])
        if query.get("state") != [request.state]:
            raise AuthenticationFailed("the sign-in answer is not for this request (state)")
        codes = query.get("code")
        if not codes:
            raise AuthenticationFailed("the sign-in answer carries no code")
        tokens = cls(issuer, client_id, None, **kwargs)
        await tokens._ask(
            {
                "grant_type": "authorization_code",
                "code": codes[0],
                "redirect_uri": request.redirect_uri,
                "code_verifier": request.code_verifier,
            }
        )
        return tokens

    async def token(self) -> str:
        async with self._lock:
            now = self._clock()
            if self._access is not None and now < self._access_until - self._margin:
                return self._access
            if self._refresh is not None and now < self._refresh_until - self._margin:
                try:
                    return await self._ask(
                        {"grant_type": "refresh_token", "refresh_token": self._refresh}
                    )
                except AuthenticationFailed:
                    # The session ended (or was revoked): make the grant again if we can.
                    self._refresh = None
            if self._grant is None:
                raise AuthenticationFailed("the sign-in has expired: sign in again")
            return await self._ask(self._grant)

    def invalidate(self) -> None:
        self._access = None

    async def aclose(self) -> None:
        """Close the HTTP client made here (not one given to the constructor)."""
        if self._owns_http:
            await self._http.aclose()

    async def _ask(self, form: dict[str, str]) -> str:
        data = {**form, "client_id": self.client_id}
        if self._secret is not None:
            data["client_secret"] = self._secret
        asked_at = self._clock()
        try:
            response = await self._http.post(self.token_url, data=data)
        except httpx.HTTPError as error:
            raise ServiceUnavailable(f"identity provider unreachable: {error!r}") from None
        body = _json(response)
        if response.status_code in (400, 401):
            # invalid_grant, invalid_client, unauthorized_client: never the secret itself.
            reason = body.get("error_description") or body.get("error") or "refused"
            raise AuthenticationFailed(str(reason), status=response.status_code)
        if response.status_code != 200 or "access_token" not in body:
            raise ServiceUnavailable(
                f"identity provider answered {response.status_code}", status=response.status_code
            )
        self._access = str(body["access_token"])
        self._access_until = asked_at + float(body.get("expires_in", 0))
        refresh = body.get("refresh_token")
        self._refresh = str(refresh) if refresh else None
        self._refresh_until = asked_at + float(body.get("refresh_expires_in", 0) or 0)
        if self._refresh is not None and not body.get("refresh_expires_in"):
            # 0 means "as long as the session": trust it until Keycloak says otherwise.
            self._refresh_until = float("inf")
        return self._access


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = [
    "DEFAULT_MARGIN_SECONDS",
    "AuthorizationRequest",
    "KeycloakTokens",
    "StaticToken",
    "TokenProvider",
    "authorization_request",
    "code_challenge",
]
