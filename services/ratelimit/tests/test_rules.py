"""Rules: validation that names the bad line, the shipped defaults, and hot reload in a
running service (a broken new file keeps the old rules)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_ratelimit.__main__ import RunningService
from gatehouse_ratelimit.rules import RulesError, Unit, load_rules, parse_rules, resolve_rules_path

if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )

Metric = Callable[..., float]
Until = Callable[..., Awaitable[None]]

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
domains:
  api:
    descriptors:
      - descriptor: [{key: user}]
        limits:
          default: {requests_per_unit: 5, unit: second}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("unit: second", "unit: fortnight"), "rules:6: domains.api.descriptors.0"),
        (GOOD.replace("requests_per_unit: 5", "requests_per_unit: 0"), "rules:6:"),
        (GOOD.replace("requests_per_unit", "request_per_unit"), "request_per_unit"),
        (GOOD.replace("default:", "admin:"), "rules:4: domains.api.descriptors.0: Value error"),
        (GOOD.replace("        limits:", "        unlimited: true\n        limits:"), "rules:4:"),
        (GOOD + "      - descriptor: [{key: user}]\n        unlimited: true\n", "two rules"),
        (GOOD.replace("  api:", "  api\n    oops: [", 1), "not valid YAML"),
        ("- just\n- a list\n", "rules:1: expected a mapping"),
    ],
)
def test_a_broken_rules_file_is_refused_naming_the_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as raised:
        parse_rules(text)
    assert expected in str(raised.value)


def test_an_unknown_unit_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(RulesError) as raised:
        parse_rules(GOOD.replace("unit: second", "unit: fortnight"))
    message = str(raised.value)
    assert "rules:6: domains.api.descriptors.0.limits.default.unit" in message
    assert "'second', 'minute', 'hour' or 'day'" in message


def test_the_shipped_rules_hold_the_documented_defaults() -> None:
    rules = load_rules(REPO / "deploy" / "ratelimit" / "rules.yaml")

    def limit(domain: str, key: str, tier: str) -> tuple[int, Unit]:
        rule = rules.match(domain, [(key, "someone")])
        assert rule is not None
        found = rule.limit_for(tier)
        assert found is not None
        return found.requests_per_unit, found.unit

    assert limit("http", "user", "default") == (100, Unit.MINUTE)
    assert limit("http", "remote_address", "default") == (300, Unit.MINUTE)
    assert limit("ws_messages", "user", "default") == (60, Unit.MINUTE)
    assert limit("http", "user", "admin") > limit("http", "user", "default")
    assert limit("http", "user", "some-other-role") == (100, Unit.MINUTE)
    lease = rules.lease_rule("ws_connections")
    assert lease is not None
    assert (lease.limit_for("default"), lease.limit_for("admin")) == (5, 20)


def test_a_relative_rules_path_falls_back_to_the_checkout(tmp_path: Path) -> None:
    configured = Path("deploy/ratelimit/rules.yaml")
    assert resolve_rules_path(configured, cwd=tmp_path) == REPO / configured
    (tmp_path / "deploy" / "ratelimit").mkdir(parents=True)
    (tmp_path / configured).write_text(GOOD)
    assert resolve_rules_path(configured, cwd=tmp_path) == tmp_path / configured


async def test_rules_reload_on_change_and_a_broken_file_keeps_the_old_ones(
    running: RunningService, stub: Stub, metric: Metric, until: Until
) -> None:
    path = running.rules.path
    request = pb.RateLimitRequest(
        domain="api",
        descriptors=[
            pb.RateLimitDescriptor(entries=[pb.RateLimitDescriptor.Entry(key="user", value="u")])
        ],
    )
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        # Decisions keep flowing while the file changes; none may fail.
        while not stop.is_set():
            try:
                await stub.ShouldRateLimit(request, timeout=5)
            except Exception as error:
                failures.append(error)
            await asyncio.sleep(0.005)

    background = asyncio.create_task(traffic())
    ok_reloads = metric("rate_limit_rules_reloads_total", result="ok")
    path.write_text(path.read_text().replace("requests_per_unit: 5,", "requests_per_unit: 3,"))
    await until(lambda: metric("rate_limit_rules_reloads_total", result="ok") > ok_reloads)
    reply = await stub.ShouldRateLimit(request, timeout=5)
    assert reply.statuses[0].current_limit.requests_per_unit == 3
    assert metric("rate_limit_rules_last_reload_success") == 1

    errors = metric("rate_limit_rules_reloads_total", result="error")
    path.write_text(path.read_text().replace("unit: second", "unit: fortnight"))
    await until(lambda: metric("rate_limit_rules_reloads_total", result="error") > errors)
    assert metric("rate_limit_rules_last_reload_success") == 0
    reply = await stub.ShouldRateLimit(request, timeout=5)
    assert reply.statuses[0].current_limit.requests_per_unit == 3

    # Fixed the way editors save: a new file renamed over the old one.
    ok_reloads = metric("rate_limit_rules_reloads_total", result="ok")
    fixed = path.with_name("rules.yaml.new")
    fixed.write_text(path.read_text().replace("unit: fortnight", "unit: minute"))
    os.replace(fixed, path)
    await until(lambda: metric("rate_limit_rules_reloads_total", result="ok") > ok_reloads)
    assert metric("rate_limit_rules_last_reload_success") == 1
    reply = await stub.ShouldRateLimit(request, timeout=5)
    assert reply.statuses[0].current_limit.unit == pb.UNIT_MINUTE
    stop.set()
    await background
    assert failures == []
