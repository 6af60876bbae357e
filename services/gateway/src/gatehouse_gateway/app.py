"""The gateway application: routes, edge middleware, error handlers and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import install_error_handlers
from gatehouse_gateway.http.author_reads import AuthorReads
from gatehouse_gateway.http.client_ip import TrustedProxies
from gatehouse_gateway.http.console import install_console
from gatehouse_gateway.http.cors import Cors
from gatehouse_gateway.http.dependencies import JsonBody
from gatehouse_gateway.http.docs import install_docs
from gatehouse_gateway.http.edge import EdgeMiddleware
from gatehouse_gateway.http.methods import install_methods
from gatehouse_gateway.http.routes import audit_logs, authors, health
from gatehouse_gateway.settings import Settings
from gatehouse_gateway.websocket import router as websocket_router
from gatehouse_gateway.websocket import start_websockets, stop_websockets

DESCRIPTION = """The public HTTP API of Gatehouse (the WebSocket protocol at `/web` is
described in docs/websocket.md). Every response carries `X-Request-ID`; errors have the
shape `{"error": {"code", "msg", "details"}}`."""


def create_app(settings: Settings, context: GatewayContext | None = None) -> FastAPI:
    """The gateway for `settings`; `context` replaces the one the lifespan would build."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context or GatewayContext.build(settings)
        app.state.context = ctx
        await ctx.start()
        await start_websockets(app)
        try:
            yield
        finally:
            ctx.draining = True
            await stop_websockets(app)
            await ctx.close()

    app = FastAPI(
        title="Gatehouse",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own spans would make one of every request, sampled or not, besides the
        # edge's (gatehouse_kit.tracing): the edge's span is the request's, and only then.
        telemetry={"tracing": False},
    )
    install_error_handlers(app)
    app.include_router(authors.router)
    app.include_router(audit_logs.router)
    app.include_router(health.router)
    app.include_router(websocket_router)
    install_docs(app)
    install_console(app)
    install_methods(app)
    # Starlette runs the middleware added last first: the edge, CORS (when some origin
    # is allowed), then the fast path.
    app.add_middleware(AuthorReads, route=_route(app, "/authors/{id}", "GET"))
    if settings.cors_origins:
        app.add_middleware(Cors, settings=settings)
    app.add_middleware(
        EdgeMiddleware,
        trusted_proxies=TrustedProxies(settings.trusted_proxies),
        max_body_bytes=settings.max_body_bytes,
    )
    _document_400_not_422(app)
    return app


def _route(app: FastAPI, path: str, method: str) -> APIRoute:
    """The app's route of `method` `path`, as routing puts it in `scope["route"]`."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")


def _json_bodies(app: FastAPI) -> set[type[BaseModel]]:
    """The models of every `JsonBody` the routes take (FastAPI documents no dependency)."""
    found: set[type[BaseModel]] = set()

    def walk(dependant: Dependant) -> None:
        for dependency in dependant.dependencies:
            if isinstance(dependency.call, JsonBody):
                found.add(dependency.call.model)
            walk(dependency)

    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            walk(context.original_route.dependant)
    return found


def _document_400_not_422(app: FastAPI) -> None:
    """Drop FastAPI's automatic 422 entries: invalid input answers 400 here. Document
    the models of the request bodies read by `JsonBody` among the components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in _json_bodies(app):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
            if not any(
                "HTTPValidationError" in str(op)
                for p in schema["paths"].values()
                for op in p.values()
            ):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
