"""The `/web` WebSocket endpoint (protocol: docs/websocket.md).

Wiring, in the gateway's app:

- `app.include_router(router)`;
- in the lifespan, after the `GatewayContext` is on `app.state.context`:
  `await start_websockets(app)` on startup and `await stop_websockets(app)` on shutdown;
- serve with `gatehouse_gateway.server.GracefulServer`, which on SIGTERM closes open
  sockets with 1001 (going away) before uvicorn's own shutdown would close them with 1012.
"""

from __future__ import annotations

import redis.asyncio as redis
from fastapi import FastAPI

from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.websocket.endpoint import router
from gatehouse_gateway.websocket.hub import WebSocketHub
from gatehouse_gateway.websocket.metrics import WS_CONNECTIONS_LIMIT

__all__ = ["WebSocketHub", "router", "start_websockets", "stop_websockets"]


async def start_websockets(app: FastAPI) -> WebSocketHub:
    """Create the process's hub on `app.state.websocket_hub` and follow the change stream."""
    context: GatewayContext = app.state.context
    settings = context.settings
    # A client of its own: its reader blocks on one connection for up to
    # `change_stream_block_seconds`, and a read that hangs longer than that fails.
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.change_stream_timeout_seconds,
        socket_timeout=settings.change_stream_block_seconds
        + settings.change_stream_timeout_seconds,
    )
    hub = WebSocketHub(
        client,
        settings.authors_stream,
        context.rate_limiter,
        context.author_cache,
        block_seconds=settings.change_stream_block_seconds,
    )
    app.state.websocket_hub = hub
    WS_CONNECTIONS_LIMIT.set(context.settings.ws_max_connections)
    await hub.start()
    return hub


async def stop_websockets(app: FastAPI) -> None:
    """Close every socket with 1001 and stop the change stream's reader."""
    hub: WebSocketHub | None = getattr(app.state, "websocket_hub", None)
    if hub is not None:
        context: GatewayContext = app.state.context
        await hub.stop(grace_seconds=context.settings.shutdown_grace_seconds)
