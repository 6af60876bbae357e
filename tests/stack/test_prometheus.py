"""Prometheus scrapes every process through Traefik, one target per replica."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness.backends import REPO
from tests.harness.stack import Stack

JOBS = ("gateway", "authors", "audit", "ratelimit")


def active_targets(stack: Stack) -> list[dict[str, Any]]:
    """Prometheus's active scrape targets."""
    response = httpx.get(f"{stack.prometheus_url}/api/v1/targets?state=active", timeout=10)
    targets: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
    return targets


def expected_instances(stack: Stack) -> set[tuple[str, str]]:
    """(job, instance) for every replica of the stack."""
    wanted = {
        ("keycloak", "keycloak-0"),
        ("traefik", "traefik-0"),
        ("alertmanager", "alertmanager-0"),
        ("alert-receiver", "alert-receiver-0"),
    }
    for job in JOBS:
        wanted |= {(job, f"{job}-{k}") for k in range(stack.replicas(job))}
    return wanted


def test_every_target_is_up(stack: Stack) -> None:
    # The first scrape comes at most one interval (5 s) after a target appears.
    deadline = time.monotonic() + 30
    while True:
        targets = active_targets(stack)
        down = [t["labels"] for t in targets if t["health"] != "up"]
        found = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
        if not down and expected_instances(stack) <= found:
            break
        assert time.monotonic() < deadline, (
            f"targets not up: {down}, missing {expected_instances(stack) - found}"
        )
        time.sleep(1)
    # Every target is scraped through Traefik's metrics entrypoint.
    assert {httpx.URL(t["scrapeUrl"]).port for t in targets} == {8082}


def test_each_replica_is_its_own_series(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.prometheus_url}/api/v1/query", params={"query": "up"}, timeout=10
    ).json()
    series = [(r["metric"]["job"], r["metric"]["instance"]) for r in response["data"]["result"]]
    # No two targets share a label set, so no two replicas' counters can mix.
    assert len(series) == len(set(series))
    assert expected_instances(stack) <= set(series)


def test_the_alert_rules_in_the_repository_are_loaded(stack: Stack) -> None:
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {group["name"] for group in groups}
    in_repo = {
        group["name"]
        for path in sorted(Path(REPO, "deploy/prometheus/rules").glob("*.yml"))
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
    }
    assert in_repo <= loaded


def test_the_scrape_interval_is_short(stack: Stack) -> None:
    config = httpx.get(f"{stack.prometheus_url}/api/v1/status/config", timeout=10).json()
    assert yaml.safe_load(config["data"]["yaml"])["global"]["scrape_interval"] == "5s"
