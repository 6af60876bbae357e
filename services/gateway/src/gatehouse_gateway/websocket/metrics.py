"""The WebSocket metrics SREs rely on (docs/websocket.md), declared once for the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WS_CONNECTIONS_ACTIVE = Gauge(
    "ws_connections_active", "Authenticated WebSocket connections open in this process."
)
WS_CONNECTIONS_LIMIT = Gauge(
    "ws_connections_limit", "Authenticated WebSocket connections this process accepts at most."
)
WS_CONNECTIONS_TOTAL = Counter(
    "ws_connections_total",
    "WebSocket upgrade attempts by how they ended their opening: authenticated, "
    "origin_refused, bad_request, headers_too_large, at_capacity, auth_failed, auth_timeout,"
    " connection_limit, unavailable.",
    ["status"],
)
WS_MESSAGES_RECEIVED = Counter(
    "ws_messages_received_total", "Data frames received from WebSocket clients."
)
WS_MESSAGES_SENT = Counter(
    "ws_messages_sent_total", "Frames (responses, broadcasts, control) sent to WebSocket clients."
)
