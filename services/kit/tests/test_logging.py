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

from gatehouse_kit.logging import _Sink, configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("kit-test", stream=sys.stderr)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_info_waits_for_the_batch_and_a_warning_writes_it_in_order() -> None:
    # The sink itself: the process's loggers may hear warnings from other threads.
    stream = io.StringIO()
    sink = _Sink(stream, flush_seconds=60)
    sink.write("first\n", urgent=False)
    sink.write("second\n", urgent=False)
    assert stream.getvalue() == ""
    sink.write("third\n", urgent=True)
    assert stream.getvalue() == "first\nsecond\nthird\n"


def test_warnings_and_errors_are_urgent_whichever_logger_sends_them() -> None:
    stream = io.StringIO()
    configure_logging("kit-test", stream=stream)
    seen: list[bool] = []
    original = _Sink.write

    def spy(self: _Sink, line: str, *, urgent: bool) -> None:
        seen.append(urgent)
        original(self, line, urgent=urgent)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Sink, "write", spy)
        log = structlog.get_logger("kit-test")
        log.info("a")
        log.warning("b")
        # Loggers of their own: a uvicorn server started earlier in this process
        # (access_log=False) stops uvicorn.access from propagating.
        logging.getLogger("kit-test.stdlib").info("c")
        logging.getLogger("kit-test.stdlib.error").error("d")
    assert seen == [False, True, False, True]
    assert [line["msg"] for line in _lines(stream)] == ["a", "b", "c", "d"]


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
    sink = _Sink(stream, flush_seconds=60)
    line = "x" * 1000 + "\n"
    for _ in range(100):
        sink.write(line, urgent=False)
    written = stream.getvalue().count("\n")
    assert 0 < written < 100
    sink.flush()
    assert stream.getvalue().count("\n") == 100


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
