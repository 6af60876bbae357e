"""The methods each path answers: the `Allow` of a 405, and the answer to OPTIONS.

Starlette's router answers a method no route of the path takes with a 405 whose `Allow`
names the methods of the first route that matched the path alone (`GET` for
`/authors/{id}`, whose PUT and DELETE are routes of their own). The table here, made
once from the app's routes, names every method of every route matching the path, plus
OPTIONS; only a 405 or an OPTIONS request reads it, no other request does any work for it.
OPTIONS (that is not a CORS preflight, `gatehouse_gateway.http.cors`) answers 204 with
that `Allow`; a path no route matches stays 404.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, compile_path

from gatehouse_gateway.errors import ApiError, ErrorCode, error_response

_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))}
# What a mounted app (the docs' static files) answers.
_MOUNTED = frozenset({"GET", "HEAD"})


class AllowedMethods:
    """Every route's path pattern and methods, in the app's order."""

    def __init__(self, app: FastAPI) -> None:
        self._table: list[tuple[re.Pattern[str], frozenset[str]]] = []
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if isinstance(route, Mount):
                self._table.append((re.compile(re.escape(route.path) + "/.*"), _MOUNTED))
            elif context.path is not None and context.methods:
                pattern, _, _ = compile_path(context.path)
                self._table.append((pattern, frozenset(context.methods)))

    def allow(self, path: str) -> str | None:
        """The `Allow` of `path`: its methods, OPTIONS last; None when no route matches."""
        methods: set[str] = set()
        for pattern, allowed in self._table:
            if pattern.fullmatch(path):
                methods |= allowed
        if not methods:
            return None
        return ", ".join([*sorted(methods, key=lambda m: _ORDER.get(m, len(_ORDER))), "OPTIONS"])


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    allowed: AllowedMethods = request.app.state.allowed_methods
    allow = allowed.allow(request.scope["path"])
    headers = {"Allow": allow} if allow is not None else {}
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=headers)
    error = ApiError(405, ErrorCode.INVALID_DATA, "Method Not Allowed", headers=headers)
    # As the app's other error handlers do: the edge reads why the request failed.
    request.state.error = error
    return error_response(error)


def install_methods(app: FastAPI) -> None:
    """Answer 405 and OPTIONS with the real `Allow` of the path (once every route is in)."""
    app.state.allowed_methods = AllowedMethods(app)
    app.add_exception_handler(405, _method_not_allowed)
