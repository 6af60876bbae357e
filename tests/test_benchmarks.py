"""The benchmarks' load generator helpers, without the platform: how vegeta's results are
read (benchmarks/vegeta.py), and one short attack of the real vegeta on a local server;
how an earlier main is taken out of the repository (benchmarks/before.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis.asyncio as redis

from benchmarks.before import _extract
from benchmarks.bench_ratelimit import raw_decision
from benchmarks.common import non_2xx, percentile
from benchmarks.pace import Pace
from benchmarks.vegeta import read_results, run_vegeta, targets_text
from gatehouse_ratelimit.store import SLIDING_WINDOW_LUA
from tests.harness.backends import Backend


def _result(seq: int, code: int, at: str, latency_ms: float, error: str = "") -> str:
    """One line of `vegeta encode -to=json`, as vegeta v12.12.0 writes it."""
    return json.dumps(
        {
            "attack": "",
            "seq": seq,
            "code": code,
            "timestamp": at,
            "latency": round(latency_ms * 1e6),
            "bytes_out": 0,
            "bytes_in": 0,
            "error": error,
            "body": None,
            "method": "GET",
            "url": "http://127.0.0.1:8080/authors/1",
            "headers": {"Content-Type": ["application/json"]} if code else None,
        }
    )


REFUSED = 'Get "http://127.0.0.1:8080/authors/1": dial tcp: connect: connection refused'


def test_every_request_is_counted_by_status_and_its_latency_kept() -> None:
    lines = [
        _result(0, 200, "2026-12-06T19:49:15.000000001Z", 2.0),
        _result(1, 200, "2026-12-06T19:49:15.25Z", 4.0),
        _result(2, 503, "2026-12-06T19:49:15.5Z", 30.0, "503 Service Unavailable"),
        _result(3, 0, "2026-12-06T19:49:15.75Z", 1.0, REFUSED),
        _result(4, 200, "2026-12-06T19:49:16.000000001Z", 500.0),
    ]
    report = read_results(lines)
    assert report.requests == 5
    assert report.statuses == {200: 3, 503: 1, 0: 1}
    assert report.errors == {REFUSED: 1}
    assert report.latencies_ms == pytest.approx([2.0, 4.0, 30.0, 1.0, 500.0])
    # From the first request sent to the last answer; sent as `vegeta report` counts.
    assert report.seconds == pytest.approx(1.5, abs=1e-5)
    assert report.sent_per_second == pytest.approx(5.0, abs=1e-3)
    assert report.per_second == pytest.approx(5 / 1.5, abs=1e-3)
    assert report.failures == {"HTTP 503": 1, f"no response: {REFUSED}": 1}


def test_percentiles_are_exact_over_every_request() -> None:
    lines = [
        _result(i, 200, f"2026-12-06T19:49:{15 + i // 1000}.{i % 1000:03d}Z", float(i + 1))
        for i in range(1000)
    ]
    quantiles = read_results(lines).quantiles_ms
    assert quantiles[50.0] == pytest.approx(500.0)
    assert quantiles[99.0] == pytest.approx(990.0)
    assert quantiles[99.9] == pytest.approx(999.0)
    assert list(quantiles) == [*(float(q) for q in range(1, 100)), 99.9]


def test_a_run_of_2xx_only_has_no_failure() -> None:
    lines = [_result(i, 200 + i, f"2026-12-06T19:49:15.{i}Z", 1.0) for i in range(5)]
    report = read_results([*lines, ""])
    assert report.requests == 5
    assert report.failures == {}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "no request"),
        (["", "  "], "no request"),
        (["not json"], "line 1 is not a vegeta result"),
        ([_result(0, 200, "2026-12-06T19:49:15Z", 1.0), '{"code": 200}'], "line 2"),
        ([_result(0, 200, "yesterday", 1.0)], "line 1"),
    ],
)
def test_output_that_is_not_vegeta_results_is_refused(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_results(lines)


def test_non_2xx_names_each_status_that_failed() -> None:
    assert non_2xx({200: 5, 204: 1, 301: 2, 429: 3, 500: 1}) == {
        "HTTP 301": 2,
        "HTTP 429": 3,
        "HTTP 500": 1,
    }


def test_a_target_is_the_request_line_then_its_headers() -> None:
    text = targets_text("GET", "http://127.0.0.1:8080/authors/7", {"Authorization": "Bearer t"})
    assert text == "GET http://127.0.0.1:8080/authors/7\nAuthorization: Bearer t\n"
    with pytest.raises(ValueError, match="single lines"):
        targets_text("GET", "http://127.0.0.1/", {"Authorization": "Bearer t\nX-Other: 1"})


class _Handler(BaseHTTPRequestHandler):
    """200 for /ok with the expected token, 401 without it, 503 for anything else."""

    def do_GET(self) -> None:
        if self.path != "/ok":
            status = 503
        elif self.headers.get("Authorization") != "Bearer secret":
            status = 401
        else:
            status = 200
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_vegeta_sends_at_the_rate_with_the_headers_and_reports_each_status(
    server: str,
) -> None:
    headers = {"Authorization": "Bearer secret"}
    ok = await run_vegeta(f"{server}/ok", headers=headers, rate=50, seconds=1.0)
    # At most the 50 due within the second (fewer only if this machine stalls vegeta).
    assert list(ok.statuses) == [200]
    assert 25 <= ok.requests <= 50
    assert ok.failures == {}
    assert ok.sent_per_second <= 60
    assert len(ok.latencies_ms) == ok.requests

    busy = await run_vegeta(f"{server}/busy", headers=headers, rate=20, seconds=0.5)
    assert list(busy.failures) == ["HTTP 503"]
    unauthorised = await run_vegeta(f"{server}/ok", headers={}, rate=20, seconds=0.5)
    assert list(unauthorised.failures) == ["HTTP 401"]


@pytest.mark.parametrize(
    ("n", "q", "expected"),
    [
        (1000, 50, 500),
        (1000, 99, 990),
        (1000, 99.9, 999),
        (100, 99, 99),
        (100, 99.9, 100),
        (3, 50, 2),
        (1, 99, 1),
        (10, 0, 1),
        (10, 100, 10),
    ],
)
def test_percentile_is_the_nearest_rank(n: int, q: float, expected: int) -> None:
    assert percentile([float(i) for i in range(n, 0, -1)], q) == expected


async def test_the_pace_probe_reports_unit_times_within_a_window_and_none_outside() -> None:
    async with Pace() as pace:
        start = pace.now()
        await asyncio.sleep(1.2)
        end = pace.now()
        during = pace.between(start, end)
    assert during is not None
    # A unit is a few milliseconds of CPU on any machine this runs on.
    assert 0.5 < during < 200
    assert pace.between(end + 10, end + 20) is None


def test_a_commit_is_extracted_whole_and_named_by_its_full_id(tmp_path: Path) -> None:
    # HEAD: the one commit every clone has, a shallow one too.
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert _extract("HEAD", tmp_path) == head
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", head], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Files and symbolic links (to files or folders), as git lists them.
    extracted = [
        str(Path(folder, name).relative_to(tmp_path))
        for folder, folders, files in os.walk(tmp_path)
        for name in files + [f for f in folders if Path(folder, f).is_symlink()]
    ]
    assert sorted(extracted) == sorted(listed)


def test_a_name_that_is_no_commit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        _extract("no-such-commit-anywhere", tmp_path)
    assert not any(tmp_path.iterdir())


async def test_the_raw_baseline_calls_the_services_script_as_it_decides(
    redis_server: Backend,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        script = client.register_script(SLIDING_WINDOW_LUA)
        keys, args = raw_decision(int(time.time() * 1000))
        await client.delete(*keys)
        reply = await script(keys=keys, args=args)
        # Admitted, and one hit used in each of the two descriptors.
        assert reply[0] == 1
        assert [reply[1], reply[7]] == [1, 1]
    finally:
        await client.delete(*keys)
        await client.aclose()
