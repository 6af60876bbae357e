"""The `/web` WebSocket endpoint (protocol: docs/websocket.md).

Wiring, in the gateway's app:

- `app.include_router(router)`;
- in the lifespan, after the `GatewayContext` is on `app.state.context`:
  `await start_websockets(app)` on startup and `await stop_websockets(app)` on shutdown;
- serve with `GracefulServer(config, app)` instead of `uvicorn.Server(config)`, so that
  on SIGTERM open sockets are closed with 1001 (going away) before uvicorn's own
  shutdown would close them with 1012.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.http.client_ip import TrustedProxies
from gatehouse_gateway.websocket.endpoint import router
from gatehouse_gateway.websocket.hub import WebSocketHub
from gatehouse_gateway.websocket.metrics import WS_CONNECTIONS_LIMIT

__all__ = ["GracefulServer", "WebSocketHub", "router", "start_websockets", "stop_websockets"]


async def start_websockets(app: FastAPI) -> WebSocketHub:
    """Create the process's hub on `app.state.websocket_hub` and subscribe to broadcasts."""
    context: GatewayContext = app.state.context
    hub = WebSocketHub(
        context.redis,
        context.settings.authors_events_channel,
        context.rate_limiter,
        TrustedProxies(context.settings.trusted_proxies),
    )
    app.state.websocket_hub = hub
    WS_CONNECTIONS_LIMIT.set(context.settings.ws_max_connections)
    await hub.start()
    return hub


async def stop_websockets(app: FastAPI) -> None:
    """Close every socket with 1001 and stop the broadcast subscriber."""
    hub: WebSocketHub | None = getattr(app.state, "websocket_hub", None)
    if hub is not None:
        context: GatewayContext = app.state.context
        await hub.stop(grace_seconds=context.settings.shutdown_grace_seconds)


class GracefulServer(uvicorn.Server):
    """A uvicorn server that says goodbye (1001) to its WebSockets before shutting down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close sockets with 1001 first, then let uvicorn drain and run the lifespan."""
        hub: WebSocketHub | None = getattr(self._app.state, "websocket_hub", None)
        if hub is not None:
            context: GatewayContext = self._app.state.context
            # New upgrades are refused from now on; readiness reports it too.
            context.draining = True
            await hub.close_all(grace_seconds=context.settings.shutdown_grace_seconds)
        await super().shutdown(sockets)
