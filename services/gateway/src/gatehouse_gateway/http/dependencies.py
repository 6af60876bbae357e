"""Typed dependencies of the HTTP routes: who calls, may they, and may they now.

`RequireRole(role)` authenticates the bearer token, applies the rate limit of the
`http` domain and checks the role against rbac's single role definition. Routes declare
it through the aliases below, so a route's signature says which role it needs.
`JsonBody(model)` is a route's request body, read only after all of that.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ValidationError

from gatehouse_gateway import client_json
from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext, gateway_context
from gatehouse_gateway.errors import (
    ApiError,
    ErrorCode,
    authentication_required,
    invalid_document,
    permission_denied,
)
from gatehouse_gateway.rbac import Role, authorize, rate_limit_tier

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="KeycloakBearer",
    description="An access token of the `gatehouse` realm issued to `gatehouse-web`.",
)


async def _context(request: Request) -> GatewayContext:
    # A coroutine, so that FastAPI calls it in the event loop, not in its thread pool.
    return gateway_context(request)


Context = Annotated[GatewayContext, Depends(_context)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None for any other: what
    the routes' `HTTPBearer` finds in the same header."""
    scheme, token = get_authorization_scheme_param(authorization)
    if not (scheme and token) or scheme.lower() != "bearer":
        return None
    return token


async def _limit(
    context: GatewayContext, state: dict[str, Any], user_id: str | None, tier: str
) -> None:
    decision = await context.rate_limiter.check_http(user_id, state["client_ip"], tier)
    state["rate_limit"] = decision
    if not decision.allowed:
        raise decision.error()


async def authenticate(
    context: GatewayContext, state: dict[str, Any], token: str | None
) -> Principal:
    """The caller of a valid bearer `token`, within its rate limit; `state` is the
    request's (`scope["state"]`), which gets the principal and the rate-limit decision.

    Refused tokens still count against the limit of the client's address, so guessing
    tokens is throttled too.
    """
    if token is None:
        await _limit(context, state, None, "default")
        raise authentication_required()
    try:
        principal = await context.verifier.verify(token)
    except ApiError as error:
        if error.status == 401:
            await _limit(context, state, None, "default")
        raise
    state["principal"] = principal
    await _limit(context, state, principal.user_id, rate_limit_tier(principal))
    return principal


def require_role(principal: Principal, role: Role) -> None:
    """403 unless `principal` holds `role` (or is admin)."""
    if not authorize(principal, role):
        raise permission_denied(role)


async def authenticated(
    request: Request,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Dependency: `authenticate` of the request's bearer token."""
    token = credentials.credentials if credentials is not None else None
    return await authenticate(context, request.scope["state"], token)


class RequireRole:
    """Dependency: the authenticated caller, who must hold `role` (or be admin)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        require_role(principal, self.role)
        return principal


AuthorReader = Annotated[Principal, Depends(RequireRole(Role.GET_AUTHORS))]
AuthorCreator = Annotated[Principal, Depends(RequireRole(Role.CREATE_AUTHOR))]
AuthorUpdater = Annotated[Principal, Depends(RequireRole(Role.UPDATE_AUTHOR))]
AuthorDeleter = Annotated[Principal, Depends(RequireRole(Role.DELETE_AUTHOR))]
AuditReader = Annotated[Principal, Depends(RequireRole(Role.VIEW_AUDIT_LOGS))]


Model = TypeVar("Model", bound=BaseModel)


def _declares_json(content_type: str | None) -> bool:
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBody(Generic[Model]):
    """Dependency: the request body as a `model`, read only once the caller is known.

    Every route with a body takes it this way, never as a FastAPI body parameter (which
    FastAPI reads and parses before any dependency runs), so that the checks come in the
    order of docs/api.md (Request bodies): authentication (401) first, so an anonymous
    client's body is never read; the route's role (403) and rate limit (429), declared
    before the body; then the size (413, counted by the edge as the body is received),
    the JSON itself (`client_json`: 400 `invalid_data`) and its schema (400
    `validation_error`).
    """

    def __init__(self, model: type[Model]) -> None:
        self.model = model

    def openapi(self) -> dict[str, Any]:
        """The route's `requestBody` in the OpenAPI document (`openapi_extra=`); the app
        documents `model` among the components."""
        schema = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        content = {"application/json": {"schema": schema}}
        return {"requestBody": {"required": True, "content": content}}

    async def __call__(
        self, request: Request, _: Annotated[Principal, Depends(authenticated)]
    ) -> Model:
        raw = await request.body()
        if not raw:
            missing = [{"field": "body", "msg": "Field required"}]
            raise ApiError(400, ErrorCode.VALIDATION_ERROR, "request validation failed", missing)
        if not _declares_json(request.headers.get("content-type")):
            raise ApiError(
                400, ErrorCode.INVALID_DATA, "request body must be JSON (application/json)"
            )
        try:
            document = client_json.parse(raw)
        except client_json.InvalidJson as invalid:
            raise ApiError(400, ErrorCode.INVALID_DATA, f"request body {invalid}") from None
        try:
            return self.model.model_validate(document)
        except ValidationError as invalid:
            raise invalid_document(invalid, "body", "request validation failed") from None
