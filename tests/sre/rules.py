"""The alert rules and rule tests under deploy/prometheus, read as data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = REPO / "deploy" / "prometheus" / "tests"
RUNBOOKS_DIR = REPO / "docs" / "runbooks"
# The alerts vmalert computes from the log store (LogsQL, not PromQL).
LOG_RULES = REPO / "deploy" / "vmalert" / "rules.yml"

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
# Series Prometheus makes itself rather than reading them from a /metrics page.
SYNTHETIC_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
# Counters exposed only from their first increment: the log shipper's drops (an
# OpenTelemetry Collector creates a series when it first records to it).
FIRST_INCREMENT_METRICS = frozenset(
    {
        "otelcol_exporter_enqueue_failed_log_records_total",
        "otelcol_exporter_send_failed_log_records_total",
    }
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule and the file it lives in."""

    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]
    file: Path


def alert_rules() -> list[AlertRule]:
    """Every alerting rule of every rule file, in file order."""
    found: list[AlertRule] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append(
                        AlertRule(
                            name=rule["alert"],
                            expr=rule["expr"],
                            labels=rule.get("labels", {}),
                            annotations=rule.get("annotations", {}),
                            file=path,
                        )
                    )
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _LABEL_LISTS.sub(" ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _KEYWORDS}


def exposed_name(metric: str) -> str:
    """The family name a /metrics page declares for `metric` (histogram series folded)."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric.removesuffix(suffix)
    return metric


def rule_test_files() -> list[Path]:
    """The promtool rule unit test files."""
    return sorted(RULE_TESTS_DIR.glob("*_test.yml"))


def log_alerts() -> list[dict[str, Any]]:
    """Every alerting rule vmalert runs against the log store, as written."""
    document: dict[str, Any] = yaml.safe_load(LOG_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]
