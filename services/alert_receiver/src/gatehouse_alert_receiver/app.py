"""The HTTP API of the alert receiver.

- `POST /alerts`: one notification in Alertmanager's webhook format (version 4). It is
  kept, logged as one structured line and counted; a body that is not such a
  notification is refused with 422 and neither kept nor counted.
- `GET /notifications`: the kept notifications, oldest first, each as Alertmanager sent
  it with the time it arrived.
- `GET /health`: 200 while the process serves.
- `GET /metrics`: `alert_receiver_notifications_total{receiver, status}` and
  `alert_receiver_alerts_total{receiver, alertname, status}`.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from gatehouse_alert_receiver.settings import Settings

log = structlog.get_logger(__name__)

NOTIFICATIONS = Counter(
    "alert_receiver_notifications_total",
    "Notifications received from Alertmanager, by receiver and group status",
    ["receiver", "status"],
)
ALERTS = Counter(
    "alert_receiver_alerts_total",
    "Alerts carried by the notifications received, by receiver, alert name and status",
    ["receiver", "alertname", "status"],
)

Status = Literal["firing", "resolved"]
# Alertmanager's JSON names (groupKey, startsAt, ...); fields it adds later are kept as sent.
WIRE = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class Alert(BaseModel):
    """One alert of a notification."""

    model_config = WIRE

    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    ends_at: datetime
    fingerprint: str = ""


class Notification(BaseModel):
    """A notification of one alert group, as Alertmanager's webhook sends it."""

    model_config = WIRE

    version: Literal["4"]
    group_key: str
    status: Status
    receiver: str
    group_labels: dict[str, str]
    common_labels: dict[str, str] = Field(default_factory=dict)
    common_annotations: dict[str, str] = Field(default_factory=dict)
    truncated_alerts: int = 0
    alerts: list[Alert]


class Received(BaseModel):
    """A kept notification and the time it arrived."""

    model_config = WIRE

    received_at: datetime
    notification: Notification


class Notifications(BaseModel):
    """What `GET /notifications` answers."""

    model_config = WIRE

    notifications: list[Received]


def create_app(settings: Settings) -> FastAPI:
    """The receiver's application, keeping the last `settings.keep` notifications."""
    kept: deque[Received] = deque(maxlen=settings.keep)
    app = FastAPI(title="Gatehouse alert receiver", docs_url=None, redoc_url=None)

    @app.post("/alerts")
    async def receive(notification: Notification) -> dict[str, Any]:
        kept.append(Received(received_at=datetime.now(UTC), notification=notification))
        NOTIFICATIONS.labels(notification.receiver, notification.status).inc()
        for alert in notification.alerts:
            name = alert.labels.get("alertname", "")
            ALERTS.labels(notification.receiver, name, alert.status).inc()
        log.info(
            "notification received",
            receiver=notification.receiver,
            status=notification.status,
            group_key=notification.group_key,
            group_labels=notification.group_labels,
            alerts=len(notification.alerts),
            firing=sum(alert.status == "firing" for alert in notification.alerts),
            truncated_alerts=notification.truncated_alerts,
        )
        return {"kept": len(kept)}

    @app.get("/notifications")
    async def notifications() -> Notifications:
        return Notifications(notifications=list(kept))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
