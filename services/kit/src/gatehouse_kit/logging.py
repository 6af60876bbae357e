"""structlog JSON logging with the request id and trace id carried in context variables.

Lines are written in batches: a warning or worse at once (with every line before it),
the others within `flush_seconds` (`LOG_FLUSH_SECONDS`), when 64 KiB are pending, and at
exit. One write per batch instead of one per line spares the process a system call per
line and whatever reads its output (supervisord, a container runtime) a wake-up per
line; a process killed with SIGKILL loses at most `flush_seconds` of lines below warning.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
import uuid
from contextvars import ContextVar
from typing import TextIO

import structlog

from gatehouse_kit.tracing import traceparent_var

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_MAX_REQUEST_ID = 128


_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{_MAX_REQUEST_ID}}}")


def sane_request_id(candidate: str | None) -> str:
    """Return `candidate` when it is a short token of letters, digits and `-_.:`,
    else a fresh UUID4."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return str(uuid.uuid4())


def _add_request_id(
    _: object, __: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    traceparent = traceparent_var.get()
    if traceparent is not None:
        # The trace id of the request's W3C trace context, sampled or not
        # (gatehouse_kit.tracing): the line and the trace are found by the same id.
        event_dict.setdefault("trace_id", traceparent[3:35])
    return event_dict


# Pending bytes that make a batch be written before its time.
_MAX_PENDING = 64 * 1024


class _Sink:
    """Log lines on their way to `out`, written in batches (see the module docstring)."""

    def __init__(self, out: TextIO, flush_seconds: float) -> None:
        self._out = out
        self._flush_seconds = flush_seconds
        self._pending: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, line: str, *, urgent: bool) -> None:
        with self._lock:
            self._pending.append(line)
            self._size += len(line)
            if urgent or self._flush_seconds <= 0 or self._size >= _MAX_PENDING:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        batch = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        self._out.write(batch)
        self._out.flush()

    def flush_periodically(self) -> None:
        while True:
            time.sleep(self._flush_seconds)
            self.flush()


class _SinkLogger:
    """structlog's logger: a rendered line into the sink, at once from warning up."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message + "\n", urgent=False)

    def urgent(self, message: str) -> None:
        self._sink.write(message + "\n", urgent=True)

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = urgent


class _SinkHandler(logging.Handler):
    """The stdlib loggers' (uvicorn's, grpc's) records, formatted, into the same sink."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._sink.write(line + "\n", urgent=record.levelno >= logging.WARNING)


_sink: _Sink | None = None


def flush_logs() -> None:
    """Write the pending lines now (also done at exit)."""
    if _sink is not None:
        _sink.flush()


atexit.register(flush_logs)


def configure_logging(
    service: str,
    level: str = "INFO",
    json: bool = True,
    stream: TextIO | None = None,
    flush_seconds: float = 0.0,
) -> None:
    """Send structured logs of this process, and of the stdlib loggers, to `stream`
    (stderr), in batches of at most `flush_seconds` (0: every line at once)."""
    global _sink
    flush_logs()
    sink = _Sink(stream or sys.stderr, flush_seconds)
    if flush_seconds > 0:
        threading.Thread(target=sink.flush_periodically, name="log-flush", daemon=True).start()
    _sink = sink

    def add_service(
        _: object, __: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[structlog.types.Processor] = [
        add_service,
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.EventRenamer("msg"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: _SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
    handler = _SinkHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("msg"),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
