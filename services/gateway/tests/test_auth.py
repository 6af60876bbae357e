"""Token verification with locally generated keys (the JWKS endpoint is a stub transport)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gatehouse_gateway.auth import Principal, TokenVerifier
from gatehouse_gateway.errors import ApiError
from gatehouse_gateway.settings import Settings
from services.gateway.tests.tokens import CLIENT_ID, ISSUER, JWKS_URL, Realm, SigningKey


@pytest.fixture
def realm() -> Realm:
    return Realm()


def _verifier(realm: Realm, refetch_interval: float = 10.0) -> TokenVerifier:
    settings = Settings(
        issuer=ISSUER,
        jwks_url=JWKS_URL,
        client_id=CLIENT_ID,
        jwks_refetch_interval_seconds=refetch_interval,
    )
    return TokenVerifier(settings, httpx.AsyncClient(transport=realm.transport()))


@pytest.fixture
async def verifier(realm: Realm) -> AsyncIterator[TokenVerifier]:
    v = _verifier(realm)
    yield v
    await v.aclose()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _refused(verifier: TokenVerifier, token: str) -> ApiError:
    with pytest.raises(ApiError) as raised:
        await verifier.verify(token)
    return raised.value


async def test_valid_token_gives_the_principal_with_client_and_realm_roles(
    verifier: TokenVerifier, realm: Realm
) -> None:
    principal = await verifier.verify(realm.token("editor"))
    assert principal == Principal(
        user_id="sub-editor",
        username="editor",
        roles=frozenset(
            {"get-authors", "create-author", "update-author", "delete-author", "offline_access"}
        ),
        expires_at=principal.expires_at,
    )


async def test_another_clients_token_for_this_api_carries_this_apis_roles_only(
    verifier: TokenVerifier, realm: Realm
) -> None:
    # A token of the realm's console client: issued to it (azp), for this API (aud); the
    # roles are this API's client roles, never another client's of the same names.
    token = realm.token(
        "viewer",
        azp="gatehouse-console",
        aud=[CLIENT_ID],
        resource_access={
            CLIENT_ID: {"roles": ["get-authors"]},
            "gatehouse-console": {"roles": ["admin"]},
        },
    )
    principal = await verifier.verify(token)
    assert principal.roles == frozenset({"get-authors", "offline_access"})


async def test_verified_tokens_are_cached_and_keys_fetched_once(
    verifier: TokenVerifier, realm: Realm
) -> None:
    token = realm.token("viewer")
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    await verifier.verify(realm.token("admin"))
    assert realm.jwks_requests == 1


async def test_the_cache_of_verified_tokens_holds_no_token(
    verifier: TokenVerifier, realm: Realm
) -> None:
    token = realm.token("viewer")
    await verifier.verify(token)
    held = [
        str(part) for entry in vars(verifier).values() if isinstance(entry, dict) for part in entry
    ]
    held += [repr(value) for value in vars(verifier).values()]
    assert not any(token in text or token.split(".")[2] in text for text in held)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lifetime": -60}, "token expired"),
        ({"nbf": 4_000_000_000}, "token not yet valid"),
        ({"iss": "http://evil.example/realms/gatehouse"}, "token issuer not accepted"),
        ({"azp": "another-client", "aud": "account"}, "token not issued for this client"),
    ],
)
async def test_claims_that_do_not_fit_are_refused_with_401(
    verifier: TokenVerifier, realm: Realm, overrides: dict[str, Any], message: str
) -> None:
    error = await _refused(verifier, realm.token("admin", **overrides))
    assert (error.status, error.code, error.msg) == (401, "authentication_failed", message)
    assert error.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_token_signed_by_another_key_with_a_known_kid_is_refused(
    verifier: TokenVerifier, realm: Realm
) -> None:
    forger = SigningKey(kid=realm.key.kid)
    error = await _refused(verifier, realm.token("admin", key=forger))
    assert (error.status, error.msg) == (401, "invalid token")


async def test_alg_none_is_refused(verifier: TokenVerifier, realm: Realm) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": realm.key.kid}).encode())
    body = _b64(json.dumps(realm.claims("admin")).encode())
    error = await _refused(verifier, f"{header}.{body}.")
    assert (error.status, error.msg) == (401, "token algorithm not allowed")


async def test_hs256_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier, realm: Realm
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": realm.key.kid}).encode())
    body = _b64(json.dumps(realm.claims("admin")).encode())
    mac = hmac.new(realm.key.public_pem(), f"{header}.{body}".encode(), hashlib.sha256)
    error = await _refused(verifier, f"{header}.{body}.{_b64(mac.digest())}")
    assert (error.status, error.msg) == (401, "token algorithm not allowed")


async def test_garbage_is_refused_as_malformed(verifier: TokenVerifier) -> None:
    error = await _refused(verifier, "not-a-jwt")
    assert (error.status, error.msg) == (401, "malformed token")


async def test_a_rotated_key_is_fetched_on_its_first_token(realm: Realm) -> None:
    verifier = _verifier(realm, refetch_interval=0)
    await verifier.verify(realm.token("viewer"))
    rotated = SigningKey()
    realm.published = [realm.key, rotated]
    principal = await verifier.verify(realm.token("viewer", key=rotated))
    assert principal.username == "viewer"
    assert realm.jwks_requests == 2
    await verifier.aclose()


async def test_forged_kids_do_not_refetch_within_the_interval(
    verifier: TokenVerifier, realm: Realm
) -> None:
    await verifier.verify(realm.token("viewer"))
    for _ in range(5):
        error = await _refused(verifier, realm.token("viewer", key=SigningKey()))
        assert (error.status, error.msg) == (401, "unknown signing key")
    assert realm.jwks_requests == 1


async def test_unreachable_key_set_without_cached_keys_is_503(
    verifier: TokenVerifier, realm: Realm
) -> None:
    realm.jwks_down = True
    error = await _refused(verifier, realm.token("viewer"))
    assert (error.status, error.code) == (503, "service_unavailable")


async def test_cached_keys_keep_working_when_the_key_set_is_unreachable(
    verifier: TokenVerifier, realm: Realm
) -> None:
    await verifier.verify(realm.token("viewer"))
    realm.jwks_down = True
    assert (await verifier.verify(realm.token("editor"))).username == "editor"
