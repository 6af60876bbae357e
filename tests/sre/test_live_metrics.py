"""Every metric the alert rules use is really exposed by the running stack."""

from __future__ import annotations

from tests.sre.prometheus import Prometheus, exposed_metric_names
from tests.sre.rules import (
    FIRST_INCREMENT_METRICS,
    SYNTHETIC_METRICS,
    alert_rules,
    exposed_name,
    metric_names,
)


async def test_every_metric_in_the_rules_is_exposed(prometheus: Prometheus) -> None:
    targets = await prometheus.active_targets()
    assert {target["labels"]["job"] for target in targets} >= {
        "gateway",
        "authors",
        "audit",
        "ratelimit",
        "keycloak",
        "traefik",
        "alertmanager",
        "alert-receiver",
        "victoria-logs",
        "otelcol",
        "vmalert",
    }
    exposed: set[str] = set()
    for target in targets:
        exposed |= exposed_metric_names(await prometheus.scrape(target))
    missing = sorted(
        f"{rule.name}: {name}"
        for rule in alert_rules()
        for name in metric_names(rule.expr)
        if name not in SYNTHETIC_METRICS | FIRST_INCREMENT_METRICS
        and name not in exposed
        and exposed_name(name) not in exposed
    )
    assert missing == []


def test_exposition_names_are_read_from_metrics_pages() -> None:
    page = (
        "# HELP audit_logs_dropped_total Audit events given up on, by reason.\n"
        "# TYPE audit_logs_dropped_total counter\n"
        "# TYPE http_request_duration_seconds histogram\n"
        'http_request_duration_seconds_bucket{le="0.1",method="GET"} 3.0\n'
        "up 1\n"
    )
    assert exposed_metric_names(page) == {
        "audit_logs_dropped_total",
        "http_request_duration_seconds",
        "http_request_duration_seconds_bucket",
        "up",
    }
