"""Tokens from a stubbed Keycloak token endpoint: grants, caching, refresh, refusals."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gatehouse_client.errors import AuthenticationFailed, ServiceUnavailable
from gatehouse_client.tokens import (
    KeycloakTokens,
    StaticToken,
    authorization_request,
    code_challenge,
)

ISSUER = "http://idp.test/auth/realms/gatehouse"
TOKEN_URL = f"{ISSUER}/protocol/openid-connect/token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Idp:
    """A token endpoint that records each form and answers from a script."""

    def __init__(self, answer: Callable[[dict[str, str]], httpx.Response] | None = None) -> None:
        self.forms: list[dict[str, str]] = []
        self.issued = 0
        self.answer = answer or self.issue

    def issue(self, form: dict[str, str]) -> httpx.Response:
        self.issued += 1
        body = {"access_token": f"access-{self.issued}", "expires_in": 300}
        if form["grant_type"] != "client_credentials":
            body |= {"refresh_token": f"refresh-{self.issued}", "refresh_expires_in": 1800}
        return httpx.Response(200, json=body)

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == TOKEN_URL
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        return self.answer(form)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


async def test_the_password_grant_is_made_once_and_its_token_reused() -> None:
    idp, clock = Idp(), Clock()
    tokens = KeycloakTokens.password(
        ISSUER, "gatehouse-web", "editor", "pw", http=idp.client(), clock=clock
    )
    assert await tokens.token() == "access-1"
    clock.now += 200
    assert await tokens.token() == "access-1"
    assert idp.forms == [
        {
            "grant_type": "password",
            "username": "editor",
            "password": "pw",
            "scope": "openid",
            "client_id": "gatehouse-web",
        }
    ]


async def test_a_token_near_its_expiry_is_refreshed_with_the_refresh_token() -> None:
    idp, clock = Idp(), Clock()
    tokens = KeycloakTokens.password(ISSUER, "c", "u", "p", http=idp.client(), clock=clock)
    await tokens.token()
    clock.now += 275  # 25 s left, under the 30 s margin
    assert await tokens.token() == "access-2"
    assert idp.forms[-1]["grant_type"] == "refresh_token"
    assert idp.forms[-1]["refresh_token"] == "refresh-1"


async def test_a_refused_refresh_falls_back_to_the_grant() -> None:
    clock = Clock()

    def answer(form: dict[str, str]) -> httpx.Response:
        if form["grant_type"] == "refresh_token":
            return httpx.Response(400, json={"error": "invalid_grant"})
        return idp.issue(form)

    idp = Idp(answer)
    tokens = KeycloakTokens.password(ISSUER, "c", "u", "p", http=idp.client(), clock=clock)
    await tokens.token()
    tokens.invalidate()
    assert await tokens.token() == "access-2"
    assert [f["grant_type"] for f in idp.forms] == ["password", "refresh_token", "password"]


async def test_client_credentials_send_the_secret_and_grant_again_at_expiry() -> None:
    idp, clock = Idp(), Clock()
    tokens = KeycloakTokens.client_credentials(
        ISSUER, "gatehouse-service", "s3cret", http=idp.client(), clock=clock
    )
    assert await tokens.token() == "access-1"
    clock.now += 280
    assert await tokens.token() == "access-2"
    assert [f["grant_type"] for f in idp.forms] == ["client_credentials"] * 2
    assert idp.forms[0]["client_secret"] == "s3cret"


async def test_a_refused_grant_is_authentication_failed_without_the_secret() -> None:
    idp = Idp(
        lambda form: httpx.Response(
            401, json={"error": "unauthorized_client", "error_description": "Invalid client"}
        )
    )
    tokens = KeycloakTokens.client_credentials(ISSUER, "svc", "wrong", http=idp.client())
    with pytest.raises(AuthenticationFailed, match="Invalid client") as refused:
        await tokens.token()
    assert "wrong" not in str(refused.value)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    "answer",
    [
        lambda form: httpx.Response(502, text="bad gateway"),
        lambda form: httpx.Response(200, json={"no": "token"}),
    ],
)
async def test_an_identity_provider_that_cannot_answer_is_service_unavailable(
    answer: Callable[[dict[str, str]], httpx.Response],
) -> None:
    tokens = KeycloakTokens.password(ISSUER, "c", "u", "p", http=Idp(answer).client())
    with pytest.raises(ServiceUnavailable):
        await tokens.token()


async def test_an_unreachable_identity_provider_is_service_unavailable() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    http = httpx.AsyncClient(transport=httpx.MockTransport(broken))
    tokens = KeycloakTokens.password(ISSUER, "c", "u", "p", http=http)
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        await tokens.token()


async def test_tokens_make_and_close_their_own_http_client() -> None:
    tokens = KeycloakTokens.password(ISSUER, "c", "u", "p")
    await tokens.aclose()
    assert tokens._http.is_closed


async def test_a_static_token_is_given_back_as_is() -> None:
    static = StaticToken("abc")
    static.invalidate()
    assert await static.token() == "abc"


def test_the_pkce_challenge_is_rfc_7636s() -> None:
    # RFC 7636, Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authorization_request_asks_for_a_code_with_s256() -> None:
    request = authorization_request(ISSUER, "gatehouse-console", "http://app/cb")
    url = urlsplit(request.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{ISSUER}/protocol/openid-connect/auth"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query == {
        "client_id": "gatehouse-console",
        "response_type": "code",
        "redirect_uri": "http://app/cb",
        "scope": "openid",
        "state": request.state,
        "code_challenge": code_challenge(request.code_verifier),
        "code_challenge_method": "S256",
    }
    assert request.state != authorization_request(ISSUER, "c", "http://app/cb").state


async def test_the_code_is_exchanged_with_its_verifier_then_refreshed() -> None:
    idp, clock = Idp(), Clock()
    request = authorization_request(ISSUER, "gatehouse-console", "http://app/cb")
    tokens = await KeycloakTokens.from_authorization_code(
        ISSUER,
        "gatehouse-console",
        request,
        f"http://app/cb?state={request.state}&code=the-code",
        http=idp.client(),
        clock=clock,
    )
    assert await tokens.token() == "access-1"
    assert idp.forms[0] == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://app/cb",
        "code_verifier": request.code_verifier,
        "client_id": "gatehouse-console",
    }
    clock.now += 290
    assert await tokens.token() == "access-2"
    clock.now += 2000  # past the session: no grant to fall back to
    with pytest.raises(AuthenticationFailed, match="sign in again"):
        await tokens.token()


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("state=other&code=c", "state"),
        ("state={state}", "no code"),
        ("error=access_denied&error_description=denied+by+user", "denied by user"),
    ],
)
async def test_a_callback_that_is_not_a_good_answer_is_refused(query: str, msg: str) -> None:
    idp = Idp()
    request = authorization_request(ISSUER, "c", "http://app/cb")
    with pytest.raises(AuthenticationFailed, match=msg):
        await KeycloakTokens.from_authorization_code(
            ISSUER,
            "c",
            request,
            "http://app/cb?" + query.format(state=request.state),
            http=idp.client(),
        )
    assert idp.forms == []
