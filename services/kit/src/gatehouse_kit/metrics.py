"""The Prometheus /metrics endpoint of a process, on its own port."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server


class MetricsServer:
    """Serves the default registry on `host:port` (port 0 picks a free one)."""

    def __init__(self, host: str, port: int) -> None:
        server, self._thread = start_http_server(port, addr=host)
        self._server: WSGIServer = server
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
