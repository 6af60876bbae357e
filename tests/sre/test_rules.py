"""The alert rules are valid, unit-tested both ways, and each has its runbook."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.sre.rules import (
    RULES_DIR,
    RUNBOOKS_DIR,
    alert_rules,
    log_alerts,
    metric_names,
    rule_test_files,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = alert_rules()


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_every_rule_file() -> None:
    files = sorted(str(path) for path in RULES_DIR.glob("*.yml"))
    assert files, "no rule files"
    result = _promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    files = [str(path) for path in rule_test_files()]
    assert files, "no rule unit tests"
    result = _promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_alert_names_are_unique() -> None:
    names = [rule.name for rule in ALERTS]
    assert len(names) == len(set(names))


def _alert_cases() -> dict[str, tuple[int, int]]:
    """Per alert: how many unit-test checks expect it firing, and how many expect quiet."""
    cases: dict[str, tuple[int, int]] = {}
    for path in rule_test_files():
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for test in document["tests"]:
            for check in test.get("alert_rule_test", []):
                firing, quiet = cases.get(check["alertname"], (0, 0))
                if check.get("exp_alerts"):
                    firing += 1
                else:
                    quiet += 1
                cases[check["alertname"]] = (firing, quiet)
    return cases


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule.name)
def test_alert_has_a_firing_and_a_quiet_unit_test(rule: Any) -> None:
    firing, quiet = _alert_cases().get(rule.name, (0, 0))
    assert firing >= 1, f"no promtool test shows {rule.name} firing"
    assert quiet >= 1, f"no promtool test shows {rule.name} staying quiet"


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule.name)
def test_alert_has_severity_summary_and_runbook(rule: Any) -> None:
    assert rule.labels.get("severity") in {"critical", "warning"}
    assert rule.annotations.get("summary")
    assert rule.annotations.get("description")
    assert rule.annotations.get("runbook_url") == f"docs/runbooks/{rule.name}.md"
    runbook = RUNBOOKS_DIR / f"{rule.name}.md"
    assert runbook.is_file(), f"{runbook} is missing"
    text = runbook.read_text()
    assert text.startswith(f"# {rule.name}\n"), f"{runbook} does not name the alert"
    for section in ("Meaning", "Impact", "Confirm", "Causes", "Actions", "Recovery"):
        assert f"## {section}" in text, f"{runbook} lacks a '{section}' section"
    # The runbook shows the alert's own query, so the page confirms what fired.
    assert all(name in text for name in metric_names(rule.expr))


def test_every_runbook_belongs_to_an_alert() -> None:
    names = {rule.name for rule in ALERTS} | {rule["alert"] for rule in log_alerts()}
    orphans = [path.name for path in RUNBOOKS_DIR.glob("*.md") if path.stem not in names]
    assert orphans == []


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (job) (rate(http_requests_total{status_code=~"5.."}[5m]))'
        " / on (job) group_left sum without (le) (foo_bucket offset 5m) > bool 0"
        " or up{job='keycloak'} unless histogram_quantile(0.99, x:rate5m)"
    )
    assert metric_names(expr) == {"http_requests_total", "foo_bucket", "up", "x:rate5m"}
