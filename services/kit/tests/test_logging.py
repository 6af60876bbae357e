"""Batched log output: warnings at once, the rest within the flush interval or at exit."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import structlog

from gatehouse_kit.logging import configure_logging, flush_logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("kit-test", stream=sys.stderr)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_info_waits_for_the_batch_and_a_warning_writes_it_in_order() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream, flush_seconds=60)
    log = structlog.get_logger("kit-test")
    log.info("first")
    logging.getLogger("uvicorn.access").info("second")
    assert stream.getvalue() == ""
    log.warning("third")
    assert [line["msg"] for line in _lines(stream)] == ["first", "second", "third"]


def test_a_stdlib_error_is_written_at_once() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream, flush_seconds=60)
    logging.getLogger("uvicorn.error").error("boom")
    assert [line["msg"] for line in _lines(stream)] == ["boom"]


def test_pending_lines_are_written_within_the_interval() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream, flush_seconds=0.05)
    structlog.get_logger("kit-test").info("later", n=1)
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    [line] = _lines(stream)
    assert (line["msg"], line["n"], line["level"], line["service"]) == (
        "later",
        1,
        "info",
        "kit-test",
    )


def test_a_full_batch_is_written_before_its_time() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream, flush_seconds=60)
    log = structlog.get_logger("kit-test")
    for n in range(1000):
        log.info("filler", padding="x" * 100, n=n)
    written = len(_lines(stream))
    assert 0 < written < 1000
    flush_logs()
    assert len(_lines(stream)) == 1000


def test_without_an_interval_every_line_is_written_at_once() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream)
    structlog.get_logger("kit-test").info("now")
    assert [line["msg"] for line in _lines(stream)] == ["now"]


def test_pending_lines_are_written_when_the_process_exits() -> None:
    program = (
        "import structlog\n"
        "from gatehouse_kit.logging import configure_logging\n"
        "configure_logging('kit-test', flush_seconds=60)\n"
        "structlog.get_logger().info('bye')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert [json.loads(line)["msg"] for line in done.stderr.splitlines()] == ["bye"]
