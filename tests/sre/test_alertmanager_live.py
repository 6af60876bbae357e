"""A real outage pages through the stack's real Alertmanager, once, and its end is told too.

The audit service is stopped through supervisord: TargetDown goes pending, then firing in
Prometheus; Prometheus sends it to Alertmanager labelled service="audit"; Alertmanager
groups every replica into one notification to the `pager` receiver, and holds back
Traefik's failed health checks of the same service (inhibited by TargetDown). Started
again, the service's alert resolves and the resolved notification arrives.

Everything runs with the shipped configuration: TargetDown's `for: 1m` (about 70 s with
the 5 s scrape and evaluation), Alertmanager's group_wait (30 s) for the page and
group_interval (1 m) for the resolution. Prometheus scrapes the receiver, so what it
counted is a series there too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.harness.stack import Stack
from tests.sre.alerting import Alertmanager, AlertReceiver
from tests.sre.prometheus import Prometheus

SERVICE = "audit"
GROUP = {"alertname": "TargetDown", "service": SERVICE}
# `for: 1m`, plus a scrape and an evaluation interval (5 s each), plus slack.
FIRING_WITHIN = 60 + 5 + 5 + 30
# group_wait (30 s) for a new group; an existing group's next flush (group_interval, 1 m).
PAGED_WITHIN = 60 + 30
# One group_interval, two when the replicas' resolutions straddle a flush, plus slack.
RESOLVED_WITHIN = 2 * 60 + 30


@pytest.mark.timeout(FIRING_WITHIN + PAGED_WITHIN + RESOLVED_WITHIN + 120)
async def test_a_stopped_service_pages_once_and_its_recovery_is_told(
    stack: Stack,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    alert_receiver: AlertReceiver,
) -> None:
    instances = {f"{SERVICE}-{k}" for k in range(stack.replicas(SERVICE))}
    stopped_at = datetime.now(UTC)
    await asyncio.to_thread(stack.stop, SERVICE)
    try:
        await prometheus.wait_for_alert("TargetDown", {"job": SERVICE}, state="pending", within=30)
        await prometheus.wait_for_alert(
            "TargetDown", {"job": SERVICE}, state="firing", within=FIRING_WITHIN
        )
        page = await alert_receiver.wait_for(
            GROUP, status="firing", since=stopped_at, within=PAGED_WITHIN
        )
        # Critical: the pager. One notification for the service, every replica in it
        # (a group may also list alerts of its own that resolved earlier).
        assert page["receiver"] == "pager"
        assert page["commonLabels"]["severity"] == "critical"
        firing = {a["labels"]["instance"] for a in page["alerts"] if a["status"] == "firing"}
        assert firing == instances
        assert page["commonAnnotations"]["runbook_url"] == "docs/runbooks/TargetDown.md"

        # Traefik's health checks of the service fail too; Alertmanager has that alert,
        # as service="audit" (not Traefik's "audit@file"), and holds it back.
        symptom = await alertmanager.wait_for_alert(
            {"alertname": "TraefikBackendUnhealthy", "service": SERVICE},
            state="suppressed",
            within=60,
        )
        assert symptom["status"]["inhibitedBy"], symptom
        sent = [
            n["groupLabels"]
            for n in await alert_receiver.notifications(stopped_at)
            if n["status"] == "firing"
        ]
        assert sent.count(GROUP) == 1
        assert {"alertname": "TraefikBackendUnhealthy", "service": SERVICE} not in sent
    finally:
        await asyncio.to_thread(stack.start, SERVICE)
    restarted_at = datetime.now(UTC)

    resolved = await alert_receiver.wait_for(
        GROUP, status="resolved", since=restarted_at, within=RESOLVED_WITHIN
    )
    assert resolved["receiver"] == "pager"
    assert {alert["status"] for alert in resolved["alerts"]} == {"resolved"}
    assert instances <= {alert["labels"]["instance"] for alert in resolved["alerts"]}
    await prometheus.wait_until_quiet("TargetDown", {"job": SERVICE}, within=60)
    # Prometheus scrapes the receiver: the notifications it counted are series there.
    await prometheus.wait_for_series(
        'alert_receiver_alerts_total{receiver="pager", alertname="TargetDown", status="resolved"}',
        within=30,
    )
