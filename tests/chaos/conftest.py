"""Fixtures of the chaos suite: the running platform under steady traffic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.chaos.traffic import MixedTraffic
from tests.harness.stack import Stack


@pytest.fixture
async def traffic(stack: Stack) -> AsyncIterator[MixedTraffic]:
    """Mixed HTTP and WebSocket traffic as the realm's `admin` (started by the test)."""
    token = await asyncio.to_thread(stack.token, "admin")
    load = MixedTraffic(stack.web_url, token, http_rate=6.0, sockets=2, ws_rate=1.0)
    yield load
    await load.stop()
