"""Keycloak through Traefik: the realm, its users and roles, the issuer and lifetimes."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.harness.stack import CLIENT_ID, Stack

# deploy/keycloak/gatehouse-realm.json, as docs/api.md and docs/operations.md list the users.
ROLES = {
    "admin": {
        "get-authors",
        "create-author",
        "update-author",
        "delete-author",
        "view-audit-logs",
        "admin",
    },
    "editor": {"get-authors", "create-author", "update-author", "delete-author"},
    "viewer": {"get-authors"},
    "auditor": {"view-audit-logs"},
    "nobody": set(),
}


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (the gateway checks the signature; here only its content matters)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def test_viewer_gets_a_token_through_the_public_entrypoint(stack: Stack) -> None:
    response = stack.token_response("viewer")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    token = claims(body["access_token"])
    assert token["iss"] == stack.issuer
    assert token["azp"] == CLIENT_ID
    assert CLIENT_ID in ([token["aud"]] if isinstance(token["aud"], str) else token["aud"])
    assert token["preferred_username"] == "viewer"
    assert token["exp"] - token["iat"] == 300
    assert token["resource_access"][CLIENT_ID]["roles"] == ["get-authors"]


@pytest.mark.parametrize("username", sorted(ROLES))
def test_each_development_user_has_exactly_its_roles(stack: Stack, username: str) -> None:
    token = claims(stack.token(username))
    roles = set(token.get("resource_access", {}).get(CLIENT_ID, {}).get("roles", []))
    assert roles == ROLES[username]


def test_a_wrong_password_is_refused(stack: Stack) -> None:
    response = stack.token_response("viewer", "not-the-password")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_grant"


def test_the_issuer_is_the_same_when_keycloak_is_asked_directly(stack: Stack) -> None:
    # Keycloak's own port (published on loopback by docker compose too).
    direct = httpx.get(
        f"{stack.keycloak_direct_url}/auth/realms/gatehouse/.well-known/openid-configuration",
        timeout=10,
    ).json()
    public = httpx.get(
        f"{stack.keycloak_url}/realms/gatehouse/.well-known/openid-configuration", timeout=10
    ).json()
    assert direct["issuer"] == public["issuer"] == stack.issuer
    token = httpx.post(
        direct["token_endpoint"],
        data={
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "username": "viewer",
            "password": "viewer-dev-password",
        },
        timeout=30,
    ).json()["access_token"]
    assert claims(token)["iss"] == stack.issuer
    # Back-channel endpoints follow the request, so services may fetch keys directly.
    assert direct["jwks_uri"].startswith(f"{stack.keycloak_direct_url}/")


def test_pkce_is_required_for_the_browser_flow(stack: Stack) -> None:
    authorize = f"{stack.keycloak_url}/realms/gatehouse/protocol/openid-connect/auth"
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": "http://localhost:8080/callback",
        "scope": "openid",
    }
    without_pkce = httpx.get(authorize, params=params, timeout=10)
    assert without_pkce.status_code in (302, 303)
    assert "code_challenge" in without_pkce.headers["location"]
    with_pkce = httpx.get(
        authorize,
        params={
            **params,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
        timeout=10,
    )
    assert with_pkce.status_code == 200
    assert "kc-form-login" in with_pkce.text or "username" in with_pkce.text


@pytest.mark.parametrize(
    "path",
    [
        "/auth/admin/",
        "/auth/admin/master/console/",
        "/auth/admin/realms/gatehouse/users",
        "/auth/realms/master/.well-known/openid-configuration",
        "/auth/metrics",
        "/auth/health/ready",
    ],
)
def test_keycloak_administration_is_not_public(stack: Stack, path: str) -> None:
    assert httpx.get(f"{stack.web_url}{path}", timeout=10).status_code == 404
