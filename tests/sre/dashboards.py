"""The provisioned Grafana dashboards under deploy/grafana, read as data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.sre.rules import REPO

GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
# What Grafana substitutes for $__rate_interval at this Prometheus's 5 s scrape interval
# is at least 20 s; a minute keeps two samples in every window.
RATE_INTERVAL = "1m"


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL query of one panel."""

    dashboard: str
    panel: str
    expr: str
    datasource_uid: str

    @property
    def promql(self) -> str:
        """The query as Grafana sends it to Prometheus."""
        return self.expr.replace("$__rate_interval", RATE_INTERVAL)


def dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON file, parsed."""
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panel_queries() -> list[PanelQuery]:
    """Every query of every panel of every dashboard."""
    return [
        PanelQuery(
            dashboard=dashboard["title"],
            panel=panel["title"],
            expr=target["expr"],
            datasource_uid=target["datasource"]["uid"],
        )
        for dashboard in dashboards().values()
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
