"""Idle keep-alive connections: Traefik drops its idle upstream connections first.

If the gateway closed an idle connection while Traefik still held it, a request Traefik
sent on it at that moment would get a bare 502; writes are not retried by the proxy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI

from gatehouse_gateway.server import uvicorn_config
from gatehouse_gateway.settings import Settings

TRAEFIK_STATIC = Path(__file__).parents[3] / "deploy" / "traefik" / "traefik.yml"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(duration: str) -> float:
    """A Go duration such as `90s` or `1m30s`, in seconds."""
    parts = _DURATION.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def traefik_idle_conn_timeout() -> float:
    """How long Traefik keeps an idle connection to an upstream, in seconds."""
    static = yaml.safe_load(TRAEFIK_STATIC.read_text())
    return _seconds(static["serversTransport"]["forwardingTimeouts"]["idleConnTimeout"])


def test_the_gateway_keeps_idle_connections_well_beyond_traefik() -> None:
    config = uvicorn_config(Settings(), FastAPI())
    # Margin for a request that is on its way while Traefik's timer runs out.
    assert config.timeout_keep_alive >= traefik_idle_conn_timeout() + 10


def test_keep_alive_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_KEEP_ALIVE_SECONDS", "120")
    assert uvicorn_config(Settings(), FastAPI()).timeout_keep_alive == 120
