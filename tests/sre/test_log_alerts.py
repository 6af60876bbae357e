"""Alerts computed from the log store (deploy/vmalert/rules.yml, docs/logging.md): a burst
of ERROR lines from one service reaches Alertmanager, a few do not. The lines enter
through the log shipper's OTLP receiver, as any process's would, under a service name
of their own."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.harness.stack import Stack
from tests.sre.alerting import Alertmanager
from tests.sre.rules import RUNBOOKS_DIR, log_alerts

SHIPPER_OTLP_LOGS = "http://127.0.0.1:4328/v1/logs"
VMALERT_URL = "http://127.0.0.1:8880"
ERROR = 17  # OpenTelemetry's severity number of ERROR


async def _error_lines(service: str, count: int) -> None:
    """`count` ERROR lines of `service`, sent to the shipper as OTLP/HTTP JSON."""
    now = time.time_ns()
    records = [
        {
            "timeUnixNano": str(now + n),
            "severityNumber": ERROR,
            "severityText": "ERROR",
            "body": {"stringValue": f"synthetic failure {n}"},
        }
        for n in range(count)
    ]
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service", "value": {"stringValue": service}}]},
                "scopeLogs": [{"logRecords": records}],
            }
        ]
    }
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(SHIPPER_OTLP_LOGS, json=body)
    response.raise_for_status()


async def test_a_burst_of_error_lines_reaches_alertmanager_and_a_few_do_not(
    native_stack: Stack, alertmanager: Alertmanager
) -> None:
    suffix = uuid.uuid4().hex[:10]
    burst, few = f"burst-{suffix}", f"few-{suffix}"
    await _error_lines(few, 5)
    await _error_lines(burst, 25)
    alert = await alertmanager.wait_for_alert(
        {"alertname": "ErrorLogBurst", "service": burst}, state="active", within=180
    )
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks/ErrorLogBurst.md"
    # The evaluation that found the burst saw the few lines too, and let them be.
    async with httpx.AsyncClient(timeout=30) as client:
        alerts = (await client.get(f"{VMALERT_URL}/api/v1/alerts")).json()["data"]["alerts"]
    services = {each["labels"].get("service") for each in alerts}
    assert burst in services
    assert few not in services


def test_each_log_alert_has_severity_summary_and_a_runbook_showing_its_query() -> None:
    rules = log_alerts()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{rule['alert']}.md"
        text = (RUNBOOKS_DIR / f"{rule['alert']}.md").read_text()
        assert text.startswith(f"# {rule['alert']}\n")
        for section in ("Meaning", "Impact", "Confirm", "Causes", "Actions", "Recovery"):
            assert f"## {section}" in text
        assert rule["expr"] in text
