"""The provisioned dashboards: well formed, one per area, and every query answers live."""

from __future__ import annotations

import pytest
import yaml

from tests.sre.dashboards import GRAFANA_DIR, PanelQuery, dashboards, panel_queries
from tests.sre.prometheus import Prometheus

QUERIES = panel_queries()


def test_one_dashboard_per_area_with_unique_uids() -> None:
    loaded = dashboards().values()
    tags = {tag for dashboard in loaded for tag in dashboard["tags"]}
    assert {"http", "grpc", "audit", "ratelimit", "websocket"} <= tags
    uids = [dashboard["uid"] for dashboard in loaded]
    assert len(uids) == len(set(uids))


def test_every_query_uses_the_provisioned_datasource() -> None:
    provisioning = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    assert QUERIES
    assert {query.datasource_uid for query in QUERIES} == {datasource["uid"]}


def test_the_dashboard_provider_reads_the_mounted_folder() -> None:
    provisioning = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "gatehouse.yml").read_text()
    )
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("query", QUERIES, ids=lambda query: f"{query.dashboard}: {query.panel}")
async def test_panel_query_returns_series(
    prometheus: Prometheus, traffic: None, query: PanelQuery
) -> None:
    series = await prometheus.wait_for_series(query.promql, within=45)
    assert series
