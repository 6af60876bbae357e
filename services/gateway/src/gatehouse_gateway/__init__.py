"""The public HTTP and WebSocket edge of Gatehouse."""
