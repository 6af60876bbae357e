"""Fixtures of the live SRE tests: the stack's Prometheus, and traffic through the stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.harness.stack import Stack
from tests.sre.prometheus import Prometheus
from tests.sre.traffic import generate_traffic


@pytest.fixture(scope="session")
async def prometheus(stack: Stack) -> AsyncIterator[Prometheus]:
    """A client of the running stack's Prometheus."""
    client = Prometheus(stack.prometheus_url)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def traffic(stack: Stack) -> None:
    """Real HTTP and WebSocket traffic has gone through the stack once."""
    token = await asyncio.to_thread(stack.token, "admin")
    await generate_traffic(stack.web_url, token)
