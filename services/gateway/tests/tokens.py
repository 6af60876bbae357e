"""Locally generated RSA keys and the tokens a Keycloak realm would issue with them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "http://localhost:8080/auth/realms/gatehouse"
JWKS_URL = "http://keycloak.test/auth/realms/gatehouse/protocol/openid-connect/certs"
CLIENT_ID = "gatehouse-web"

ROLES_OF = {
    "admin": [
        "admin",
        "get-authors",
        "create-author",
        "update-author",
        "delete-author",
        "view-audit-logs",
    ],
    "editor": ["get-authors", "create-author", "update-author", "delete-author"],
    "viewer": ["get-authors"],
    "auditor": ["view-audit-logs"],
    "nobody": [],
}


class SigningKey:
    """An RSA key pair with a key id, as one entry of a realm's JWKS."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key())
        )
        entry.update(kid=self.kid, use="sig", alg="RS256")
        return entry

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Realm:
    """Issues tokens like Keycloak's `gatehouse` realm and serves its JWKS over a mock transport."""

    def __init__(self) -> None:
        self.key = SigningKey()
        self.published = [self.key]
        self.jwks_requests = 0
        self.jwks_down = False

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.jwks_requests += 1
            if self.jwks_down or str(request.url) != JWKS_URL:
                return httpx.Response(503)
            return httpx.Response(200, json={"keys": [k.jwk() for k in self.published]})

        return httpx.MockTransport(handle)

    def claims(self, username: str, *, lifetime: float = 300, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": f"sub-{username}",
            "aud": "account",
            "azp": CLIENT_ID,
            "typ": "Bearer",
            "preferred_username": username,
            "iat": now,
            "exp": now + int(lifetime),
            "resource_access": {CLIENT_ID: {"roles": ROLES_OF.get(username, [])}},
            "realm_access": {"roles": ["offline_access"]},
        }
        claims.update(overrides)
        return claims

    def token(
        self,
        username: str,
        *,
        key: SigningKey | None = None,
        algorithm: str = "RS256",
        **overrides: Any,
    ) -> str:
        signer = key or self.key
        lifetime = overrides.pop("lifetime", 300)
        return jwt.encode(
            self.claims(username, lifetime=lifetime, **overrides),
            signer.private,
            algorithm=algorithm,
            headers={"kid": signer.kid},
        )
