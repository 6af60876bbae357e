"""GET /authors/{id}, the platform's hottest request, answered before FastAPI's routing.

A pure ASGI middleware just inside the edge (`EdgeMiddleware`, which still identifies
the request, adds the edge and rate-limit headers, logs, counts and audits it). A GET
of `/authors/<id>` with an id FastAPI would read the same way (digits, no leading zero,
at most `MAX_ID`) is authenticated, rate-limited, authorized and answered by the very
functions the route's dependencies and body call (`authenticate`, `require_role`,
`author_response`), without matching every route, solving the dependency graph or
building a Request: on a cache hit that is most of what the gateway spends on a request
(docs/performance.md). The route stays as it is, for everything else (a malformed or
out-of-range id, another method) and for the OpenAPI document; the answers of both
paths are the same, which tests/test_author_reads.py holds them to.
"""

from __future__ import annotations

import re

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import ApiError, error_response
from gatehouse_gateway.http.dependencies import authenticate, bearer_token, require_role
from gatehouse_gateway.http.routes.authors import author_response
from gatehouse_gateway.rbac import Role
from gatehouse_gateway.schemas import MAX_ID

_PATH = re.compile(r"/authors/([1-9][0-9]{0,18})")


class AuthorReads:
    """See the module docstring; `route` is the app's GET /authors/{id} route, which the
    edge's metrics, log line and audit event are labelled with."""

    def __init__(self, app: ASGIApp, *, route: BaseRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _PATH.fullmatch(scope["path"])
            if match is not None and int(match[1]) <= MAX_ID:
                await self._get(scope, receive, send, match[1])
                return
        await self.app(scope, receive, send)

    async def _get(self, scope: Scope, receive: Receive, send: Send, author_id: str) -> None:
        scope["route"] = self.route
        scope["path_params"] = {"id": author_id}
        state = scope["state"]
        context: GatewayContext = scope["app"].state.context
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        try:
            principal = await authenticate(context, state, bearer_token(authorization))
            require_role(principal, Role.GET_AUTHORS)
            response = await author_response(context, int(author_id), if_none_match)
        except ApiError as error:
            # As the app's ApiError handler does: the edge reads why the request failed.
            state["error"] = error
            response = error_response(error)
        await response(scope, receive, send)
