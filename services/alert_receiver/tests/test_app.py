"""The alert receiver keeps, logs and counts what Alertmanager posts, and refuses the rest."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gatehouse_alert_receiver.app import create_app
from gatehouse_alert_receiver.settings import Settings
from gatehouse_kit.logging import configure_logging


def notification(status: str = "firing", receiver: str = "pager", **extra: Any) -> dict[str, Any]:
    """A notification as Alertmanager 0.25's webhook sends it: TargetDown of two replicas."""
    alerts = [
        {
            "status": status,
            "labels": {
                "alertname": "TargetDown",
                "job": "audit",
                "service": "audit",
                "instance": f"audit-{k}",
                "severity": "critical",
            },
            "annotations": {"runbook_url": "docs/runbooks/TargetDown.md"},
            "startsAt": "2026-01-01T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T10:05:00.000Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            "fingerprint": f"00000000000000a{k}",
        }
        for k in range(2)
    ]
    return {
        "receiver": receiver,
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": "TargetDown", "service": "audit"},
        "commonLabels": {"alertname": "TargetDown", "job": "audit", "service": "audit"},
        "commonAnnotations": {"runbook_url": "docs/runbooks/TargetDown.md"},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="TargetDown", service="audit"}',
        "truncatedAlerts": 0,
        **extra,
    }


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(keep=3))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as client:
        yield client


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("alert-receiver", stream=out)
    yield out
    configure_logging("alert-receiver")


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def kept(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/notifications")
    assert response.status_code == 200
    notifications: list[dict[str, Any]] = response.json()["notifications"]
    return notifications


async def test_a_notification_is_kept_as_sent(client: httpx.AsyncClient) -> None:
    sent = notification()
    response = await client.post("/alerts", json=sent)
    assert response.status_code == 200
    (received,) = await kept(client)
    assert received["receivedAt"]
    shown = received["notification"]
    assert shown["groupKey"] == sent["groupKey"]
    assert shown["groupLabels"] == {"alertname": "TargetDown", "service": "audit"}
    assert shown["externalURL"] == "http://127.0.0.1:9093"
    assert [a["labels"]["instance"] for a in shown["alerts"]] == ["audit-0", "audit-1"]
    assert shown["alerts"][0]["generatorURL"] == sent["alerts"][0]["generatorURL"]
    assert shown["alerts"][0]["startsAt"].startswith("2026-01-01T10:00:00")


async def test_only_the_last_notifications_are_kept(client: httpx.AsyncClient) -> None:
    for n in range(5):
        response = await client.post("/alerts", json=notification(groupKey=f"group-{n}"))
        assert response.json() == {"kept": min(n + 1, 3)}
    assert [r["notification"]["groupKey"] for r in await kept(client)] == [
        "group-2",
        "group-3",
        "group-4",
    ]


async def test_notifications_and_alerts_are_counted(client: httpx.AsyncClient) -> None:
    before = counted("alert_receiver_notifications_total", receiver="pager", status="resolved")
    alerts_before = counted(
        "alert_receiver_alerts_total", receiver="pager", alertname="TargetDown", status="resolved"
    )
    await client.post("/alerts", json=notification(status="resolved"))
    after = counted("alert_receiver_notifications_total", receiver="pager", status="resolved")
    alerts_after = counted(
        "alert_receiver_alerts_total", receiver="pager", alertname="TargetDown", status="resolved"
    )
    assert after - before == 1
    assert alerts_after - alerts_before == 2
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'alert_receiver_notifications_total{receiver="pager",status="resolved"}' in metrics.text


async def test_each_notification_is_logged_as_one_structured_line(
    client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    await client.post("/alerts", json=notification(receiver="operators"))
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    (line,) = [line for line in lines if line["msg"] == "notification received"]
    assert line["service"] == "alert-receiver"
    assert line["receiver"] == "operators"
    assert line["status"] == "firing"
    assert line["group_labels"] == {"alertname": "TargetDown", "service": "audit"}
    assert (line["alerts"], line["firing"]) == (2, 2)


@pytest.mark.parametrize(
    "body",
    [
        {"not": "a notification"},
        notification(version="3"),
        notification(status="silenced"),
        {**notification(), "alerts": [{"status": "firing"}]},
    ],
    ids=["foreign", "old-version", "unknown-status", "alert-without-labels"],
)
async def test_anything_else_is_refused_and_not_kept(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = counted("alert_receiver_notifications_total", receiver="pager", status="firing")
    response = await client.post("/alerts", json=body)
    assert response.status_code == 422
    assert await kept(client) == []
    assert counted("alert_receiver_notifications_total", receiver="pager", status="firing") == (
        before
    )


async def test_health_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().bind_host, Settings().http_port, Settings().keep) == (
        "127.0.0.1",
        9095,
        200,
    )
    monkeypatch.setenv("ALERT_RECEIVER_BIND_HOST", "0.0.0.0")
    monkeypatch.setenv("ALERT_RECEIVER_KEEP", "7")
    assert (Settings().bind_host, Settings().keep) == ("0.0.0.0", 7)
