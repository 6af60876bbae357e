"""Shutdown drains: unhealthy for the load balancer first, still serving, then gone."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

DRAIN_SECONDS = 1.5


async def test_a_draining_gateway_fails_liveness_but_serves_until_the_drain_ends(
    serve_gateway: Any, issuer: Any, ws: Any
) -> None:
    viewer = {"Authorization": f"Bearer {issuer.token('viewer')}"}
    async with (
        serve_gateway(shutdown_drain_seconds=DRAIN_SECONDS) as gateway,
        ws(gateway, issuer.token("viewer")) as socket,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=5) as client,
    ):
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        began = time.monotonic()
        gateway.server.handle_exit(signal.SIGTERM, None)
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (503, {"status": "draining"})
        assert (await client.get("/health/ready")).status_code == 503
        # Requests are still accepted and answered, on new connections too.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as fresh:
            assert (await fresh.get("/authors", headers=viewer)).status_code == 200
        # New sockets are refused while open ones stay until the drain is over.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gateway.url, additional_headers=viewer):
                pass
        assert refused.value.response.status_code == 503
        assert await socket.closed() == (1001, "server shutting down")
        assert time.monotonic() - began >= DRAIN_SECONDS
        # The drain is over: the port is closed.
        await asyncio.wait_for(_refused(gateway.port), timeout=5)


async def _refused(port: int) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.close()
        await asyncio.sleep(0.05)
