"""Fixtures of the chaos suite: the running platform under steady traffic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.chaos.traffic import MixedTraffic
from tests.e2e.replicas import two_replicas
from tests.harness.stack import Stack


@pytest.fixture(scope="module")
def replicated(stack: Stack) -> Stack:
    """The platform with two replicas of every service, so that one gateway may go away."""
    two_replicas(stack)
    return stack


@pytest.fixture
async def traffic(replicated: Stack) -> AsyncIterator[MixedTraffic]:
    """Mixed HTTP and WebSocket traffic as the realm's `admin` (started by the test)."""
    token = await asyncio.to_thread(replicated.token, "admin")
    load = MixedTraffic(replicated.web_url, token, http_rate=6.0, sockets=2, ws_rate=1.0)
    yield load
    await load.stop()
