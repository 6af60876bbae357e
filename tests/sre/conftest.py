"""Fixtures of the live SRE tests: the stack's Prometheus, and traffic through the stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.sre.prometheus import Prometheus
from tests.sre.traffic import generate_traffic


@pytest.fixture(scope="session")
async def prometheus(stack: Any) -> AsyncIterator[Prometheus]:
    """A client of the running stack's Prometheus."""
    client = Prometheus(stack.prometheus_url)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def traffic(stack: Any) -> None:
    """Real HTTP and WebSocket traffic has gone through the stack once."""
    await generate_traffic(stack.web_url)
