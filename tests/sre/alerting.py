"""Small clients of the stack's Alertmanager (API v2) and of its alert receiver."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from tests.sre.prometheus import poll


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


class Alertmanager:
    """The alerts one Alertmanager holds, with their state (active, suppressed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.AsyncClient(base_url=url, timeout=10)

    async def close(self) -> None:
        await self._client.aclose()

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds now, silenced and inhibited ones too."""
        response = await self._client.get("/api/v2/alerts")
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    async def wait_for_alert(
        self, labels: Mapping[str, str], *, state: str, within: float
    ) -> dict[str, Any]:
        """The alert whose labels include `labels`, once it is in `state`."""

        async def found() -> dict[str, Any] | None:
            for alert in await self.alerts():
                if _has(alert["labels"], labels) and alert["status"]["state"] == state:
                    return alert
            return None

        return await poll(found, within, f"{dict(labels)} {state} in Alertmanager")


class AlertReceiver:
    """The notifications the platform's alert receiver has kept (services/alert_receiver)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.AsyncClient(base_url=url, timeout=10)

    async def close(self) -> None:
        await self._client.aclose()

    async def notifications(self, since: datetime) -> list[dict[str, Any]]:
        """The notifications that arrived after `since`, oldest first."""
        response = await self._client.get("/notifications")
        response.raise_for_status()
        return [
            kept["notification"]
            for kept in response.json()["notifications"]
            if datetime.fromisoformat(kept["receivedAt"]) > since
        ]

    async def wait_for(
        self, group: Mapping[str, str], *, status: str, since: datetime, within: float
    ) -> dict[str, Any]:
        """The first notification of the alert group `group` in `status` after `since`."""

        async def found() -> dict[str, Any] | None:
            for notification in await self.notifications(since):
                if notification["groupLabels"] == group and notification["status"] == status:
                    return notification
            return None

        return await poll(found, within, f"a {status} notification of {dict(group)}")
