"""Fixtures of the live SRE tests: the stack's Prometheus, Alertmanager and alert receiver,
and traffic through the stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.harness.stack import Stack
from tests.sre.alerting import Alertmanager, AlertReceiver
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


@pytest.fixture(scope="session")
async def alertmanager(stack: Stack) -> AsyncIterator[Alertmanager]:
    """A client of the running stack's Alertmanager."""
    client = Alertmanager(stack.alertmanager_url)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def alert_receiver(stack: Stack) -> AsyncIterator[AlertReceiver]:
    """A client of the running stack's alert receiver."""
    client = AlertReceiver(stack.alert_receiver_url)
    yield client
    await client.close()
