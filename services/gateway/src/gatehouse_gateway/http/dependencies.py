"""Typed dependencies of the HTTP routes: who calls, may they, and may they now.

`RequireRole(role)` authenticates the bearer token, applies the rate limit of the
`http` domain and checks the role against rbac's single role definition. Routes declare
it through the aliases below, so a route's signature says which role it needs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext, gateway_context
from gatehouse_gateway.errors import ApiError, authentication_failed, permission_denied
from gatehouse_gateway.rbac import Role, authorize, rate_limit_tier

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="KeycloakBearer",
    description="An access token of the `gatehouse` realm issued to `gatehouse-web`.",
)

Context = Annotated[GatewayContext, Depends(gateway_context)]


async def _limit(context: GatewayContext, request: Request, user_id: str | None, tier: str) -> None:
    decision = await context.rate_limiter.check_http(user_id, request.state.client_ip, tier)
    request.state.rate_limit = decision
    if not decision.allowed:
        raise decision.error()


async def authenticated(
    request: Request,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a valid bearer token, within its rate limit.

    Refused tokens still count against the limit of the client's address, so guessing
    tokens is throttled too.
    """
    if credentials is None:
        await _limit(context, request, None, "default")
        raise authentication_failed("missing bearer token")
    try:
        principal = await context.verifier.verify(credentials.credentials)
    except ApiError as error:
        if error.status == 401:
            await _limit(context, request, None, "default")
        raise
    request.state.principal = principal
    await _limit(context, request, principal.user_id, rate_limit_tier(principal))
    return principal


class RequireRole:
    """Dependency: the authenticated caller, who must hold `role` (or be admin)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not authorize(principal, self.role):
            raise permission_denied(self.role)
        return principal


AuthorReader = Annotated[Principal, Depends(RequireRole(Role.GET_AUTHORS))]
AuthorCreator = Annotated[Principal, Depends(RequireRole(Role.CREATE_AUTHOR))]
AuthorUpdater = Annotated[Principal, Depends(RequireRole(Role.UPDATE_AUTHOR))]
AuthorDeleter = Annotated[Principal, Depends(RequireRole(Role.DELETE_AUTHOR))]
AuditReader = Annotated[Principal, Depends(RequireRole(Role.VIEW_AUDIT_LOGS))]
