"""A small client of the stack's Prometheus HTTP API, for the live SRE tests."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx

# A sample line of the text exposition format: the metric name is everything up to
# the labels or the value.
T = TypeVar("T")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")
_DECLARED = re.compile(r"^# (?:TYPE|HELP) ([a-zA-Z_:][a-zA-Z0-9_:]*) ")


def exposed_metric_names(text: str) -> set[str]:
    """Every metric name a /metrics page declares or has samples of."""
    names: set[str] = set()
    for line in text.splitlines():
        match = _DECLARED.match(line) or _SAMPLE.match(line)
        if match:
            names.add(match.group(1))
    return names


class Prometheus:
    """Queries, targets and alerts of one Prometheus server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.AsyncClient(base_url=url, timeout=10)

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self._client.get(path, params=params)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one series) `expr` evaluates to now."""
        data = await self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    async def active_targets(self) -> list[dict[str, Any]]:
        """The targets Prometheus scrapes, with their labels, scrape URL and health."""
        data = await self._get("/api/v1/targets", {"state": "active"})
        targets: list[dict[str, Any]] = data["activeTargets"]
        return targets

    async def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing right now."""
        data = await self._get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def scrape(self, target: dict[str, Any]) -> str:
        """The /metrics page of one target, fetched as Prometheus fetches it."""
        response = await self._client.get(target["scrapeUrl"])
        response.raise_for_status()
        return response.text

    async def matching_alerts(self, name: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The active alerts named `name` whose labels include `labels`."""
        return [
            alert
            for alert in await self.alerts()
            if alert["labels"].get("alertname") == name
            and all(alert["labels"].get(key) == value for key, value in labels.items())
        ]

    async def wait_for_alert(
        self, name: str, labels: Mapping[str, str], *, state: str, within: float
    ) -> dict[str, Any]:
        """The alert `name` with `labels`, once it is in `state`; fails after `within` seconds."""

        async def in_state() -> dict[str, Any] | None:
            found = [a for a in await self.matching_alerts(name, labels) if a["state"] == state]
            return found[0] if found else None

        return await poll(in_state, within, f"{name}{dict(labels)} {state}")

    async def wait_for_series(self, expr: str, *, within: float) -> list[dict[str, Any]]:
        """The series `expr` returns, once it returns any; fails after `within` seconds."""

        async def series() -> list[dict[str, Any]] | None:
            return await self.query(expr) or None

        return await poll(series, within, f"series of {expr!r}")

    async def wait_until_quiet(self, name: str, labels: Mapping[str, str], within: float) -> None:
        """Wait until no alert `name` with `labels` is pending or firing."""

        async def quiet() -> bool | None:
            return not await self.matching_alerts(name, labels) or None

        await poll(quiet, within, f"{name}{dict(labels)} resolved")


async def poll(check: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    """The first non-None result of `check`, called every second; fails after `within` seconds.

    Prometheus scrapes and evaluates rules on its own clock, so there is no event to
    await: the tests look again until the deadline.
    """
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {within:.0f}s")
        await asyncio.sleep(1)
