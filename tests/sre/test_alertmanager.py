"""deploy/alertmanager/alertmanager.yml: valid for Debian's amtool, every alert routed by its
severity, grouped by alert and service, and inhibitions that name real alerts; the
production receivers that docs/alerting.md shows are valid too, and every runbook shows
how to silence its alert."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sre.rules import REPO, RUNBOOKS_DIR, AlertRule, alert_rules

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTING_DOC = REPO / "docs" / "alerting.md"
AMTOOL = "/usr/bin/amtool"
RECEIVERS = {"critical": "pager", "warning": "operators"}
ALERTS = alert_rules()
_ALERTNAME = re.compile(r'^alertname(=~?)"([^"]*)"$')
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def _config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def test_amtool_accepts_the_configuration() -> None:
    result = _amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_refuses_a_route_to_a_receiver_that_does_not_exist(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(CONFIG.read_text().replace("receiver: pager", "receiver: pagr", 1))
    result = _amtool("check-config", str(broken))
    assert result.returncode != 0
    assert "pagr" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule.name)
def test_each_alert_reaches_the_receiver_of_its_severity(rule: AlertRule) -> None:
    severity = rule.labels["severity"]
    result = _amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={RECEIVERS[severity]}",
        f"alertname={rule.name}",
        f"severity={severity}",
        "service=authors",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_notifications_are_grouped_by_alert_and_service() -> None:
    route = _config()["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert all("group_by" not in child for child in route["routes"])


def _alertnames(matchers: list[str]) -> set[str]:
    """The alert names a list of matchers selects (a regex of alternatives spelled out)."""
    names: set[str] = set()
    for matcher in matchers:
        found = _ALERTNAME.match(matcher)
        if found:
            names |= set(found.group(2).split("|")) if found.group(1) == "=~" else {found.group(2)}
    return names


def test_inhibitions_name_real_alerts() -> None:
    known = {rule.name for rule in ALERTS}
    for inhibition in _config()["inhibit_rules"]:
        source = _alertnames(inhibition["source_matchers"])
        target = _alertnames(inhibition["target_matchers"])
        assert source, inhibition
        assert target, inhibition
        assert source | target <= known, (source | target) - known


def test_a_dead_service_mutes_its_symptoms_of_the_same_service() -> None:
    (dead,) = [
        inhibition
        for inhibition in _config()["inhibit_rules"]
        if inhibition["source_matchers"] == ['alertname="TargetDown"']
    ]
    assert dead["equal"] == ["service"]
    assert {
        "HighHttp5xxRatio",
        "HighHttpP99Latency",
        "CircuitBreakerOpen",
        "TraefikBackendUnhealthy",
    } <= _alertnames(dead["target_matchers"])


def test_matcher_names_are_read_from_the_matchers() -> None:
    assert _alertnames(['alertname=~"A|B"', 'service!="x"', 'alertname="C"']) == {"A", "B", "C"}


def test_the_documented_production_receivers_are_valid(tmp_path: Path) -> None:
    """docs/alerting.md's receivers and global settings, put into the shipped file."""
    section = ALERTING_DOC.read_text().split("## Production receivers", 1)[1].split("\n## ")[0]
    (block,) = _YAML_BLOCK.findall(section)
    production: dict[str, Any] = yaml.safe_load(block)
    config = _config()
    assert {r["name"] for r in production["receivers"]} == {r["name"] for r in config["receivers"]}
    config.update(production)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = _amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "webhook_configs" not in path.read_text()


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule.name)
def test_each_runbook_shows_how_to_silence_its_alert(rule: AlertRule) -> None:
    runbook = (RUNBOOKS_DIR / f"{rule.name}.md").read_text()
    assert "\n## Silence\n" in runbook
    section = runbook.split("\n## Silence\n", 1)[1]
    assert f"silence add alertname={rule.name} service=" in section
    assert "silence expire" in section
