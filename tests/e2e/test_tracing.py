"""Distributed tracing end to end (docs/tracing.md): requests through Traefik's public
entrypoint, each with a W3C traceparent that asks for sampling, found afterwards as one
trace in the trace backend's query API (Jaeger), with the spans of every process the
request crossed; and the trace id in the log lines of those processes."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx

from tests.e2e import ws
from tests.e2e.conftest import Tokens, client_address
from tests.harness.stack import Stack

AUTHORS_DB = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/authors"
# Spans reach the backend in batches (the SDKs' batch processors wait up to 5 s): a busy
# machine may take longer, and nothing here depends on how long.
TRACE_WITHIN_SECONDS = 90.0


def traceparent() -> tuple[str, str]:
    """A fresh trace id and a traceparent of it with the sampled flag."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def _services(trace: dict[str, Any]) -> Counter[str]:
    processes = trace["processes"]
    return Counter(processes[span["processID"]]["serviceName"] for span in trace["spans"])


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _database_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in trace["spans"] if _tags(s).get("db.system") == "postgresql"]


def _whole(trace: dict[str, Any], parent: str) -> bool:
    """Whether every span's parent is in the trace, but the first's: the caller's span of
    the traceparent `parent` (each process sends its spans on its own: a part may come
    before the rest)."""
    ids = {span["spanID"] for span in trace["spans"]} | {parent.split("-")[2]}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        if not parents or parents[0] not in ids:
            return False
    return True


async def fetch_trace(
    stack: Stack,
    parent: str,
    *,
    services: set[str],
    database: bool,
    operations: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The trace of the traceparent `parent` from Jaeger's query API, once it is whole and
    has spans of every one of `services`, of a PostgreSQL call (if `database`) and of
    each of `operations`; fails after TRACE_WITHIN_SECONDS."""
    trace_id = parent.split("-")[1]
    deadline = time.monotonic() + TRACE_WITHIN_SECONDS
    last: Any = None
    async with httpx.AsyncClient(base_url=stack.tracing_url, timeout=10) as client:
        while True:
            answer = await client.get(f"/api/traces/{trace_id}")
            if answer.status_code == 200:
                (trace,) = answer.json()["data"]
                last = _services(trace)
                if (
                    services <= set(last)
                    and (not database or _database_spans(trace))
                    and operations <= {span["operationName"] for span in trace["spans"]}
                    and _whole(trace, parent)
                ):
                    return dict(trace)
            else:
                last = answer.status_code
            assert time.monotonic() < deadline, f"trace {trace_id} incomplete: {last}"
            await asyncio.sleep(1)


def _ancestors(trace: dict[str, Any], span: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans above `span` in its trace, nearest first."""
    by_id = {s["spanID"]: s for s in trace["spans"]}
    found: list[dict[str, Any]] = []
    while True:
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        if not parents or parents[0] not in by_id:
            return found
        span = by_id[parents[0]]
        found.append(span)


def _service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


async def test_a_get_that_misses_the_cache_is_one_trace_from_traefik_to_postgresql(
    native_stack: Stack, tokens: Tokens
) -> None:
    # Made with SQL: no change event put it in any gateway replica's edge cache, so the
    # read goes to the authors service and PostgreSQL (docs/performance.md, Edge cache).
    connection = await asyncpg.connect(AUTHORS_DB)
    try:
        author_id = await connection.fetchval(
            "INSERT INTO authors (name) VALUES ($1) RETURNING id", f"traced-{time.time_ns()}"
        )
    finally:
        await connection.close()
    trace_id, parent = traceparent()
    async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=20) as web:
        answer = await web.get(
            f"/authors/{author_id}",
            headers={
                **(await tokens.headers("viewer")),
                "traceparent": parent,
                "X-Forwarded-For": client_address(),
            },
        )
    assert answer.status_code == 200, answer.text

    trace = await fetch_trace(
        native_stack, parent, services={"traefik", "gateway", "authors"}, database=True
    )
    assert {span["traceID"] for span in trace["spans"]} == {trace_id}
    # One tree: every span but Traefik's first hangs below the client's span.
    roots = [s for s in trace["spans"] if not _ancestors(trace, s)]
    assert {_service_of(trace, s) for s in roots} == {"traefik"}
    # The PostgreSQL call sits below the authors handler, below the gateway's call,
    # below the gateway's request span, below Traefik's.
    query = _database_spans(trace)[0]
    path = [_service_of(trace, s) for s in _ancestors(trace, query)]
    assert path[0] == "authors"
    assert "gateway" in path
    assert path[-1] == "traefik"
    request = next(s for s in trace["spans"] if s["operationName"] == "GET /authors/{id}")
    assert _tags(request)["http.response.status_code"] == 200
    # The gateway's latency histogram holds the request's trace id as an exemplar, which
    # Prometheus scraped and kept (scrapes every 5 s: waited for, 60 s at most).
    series = await _exemplar(native_stack, "http_request_duration_seconds_bucket", trace_id)
    assert (series["job"], series["endpoint"]) == ("gateway", "/authors/{id}")
    # The log lines of the request carry its trace id: the access lines of Traefik and the
    # gateway.
    # Traefik's: the public hop (traced: trace_id) and the gRPC hop the gateway's call took
    # (not traced: the traceparent the call carried, with the gateway's client span).
    traefik_lines = await _log_lines(native_stack, "traefik", trace_id)
    assert sorted(e["RequestPath"] for e in traefik_lines) == [
        f"/authors/{author_id}",
        "/gatehouse.authors.v1.AuthorsService/GetAuthor",
    ]
    call = next(e for e in traefik_lines if e["entryPointName"] == "grpc")
    client = next(s for s in trace["spans"] if s["spanID"] == call["request_Traceparent"][36:52])
    assert (_service_of(trace, client), client["operationName"]) == (
        "gateway",
        "authors/GetAuthor",
    )
    gateway_lines = [
        e for e in await _log_lines(native_stack, "gateway", trace_id) if e["msg"] == "http_request"
    ]
    assert [e["path"] for e in gateway_lines] == [f"/authors/{author_id}"]
    # And the authors service's line of the call it served.
    authors_lines = [
        e for e in await _log_lines(native_stack, "authors", trace_id) if e["msg"] == "grpc_request"
    ]
    assert [e["grpc_method"] for e in authors_lines] == [
        "gatehouse.authors.v1.AuthorsService/GetAuthor"
    ]


async def _exemplar(stack: Stack, metric: str, trace_id: str) -> dict[str, Any]:
    """The series of `metric` in Prometheus that has `trace_id` as an exemplar."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=stack.prometheus_url, timeout=10) as client:
        while True:
            now = time.time()
            answer = await client.get(
                "/api/v1/query_exemplars",
                params={"query": metric, "start": now - 600, "end": now},
            )
            answer.raise_for_status()
            for series in answer.json()["data"]:
                for exemplar in series["exemplars"]:
                    if exemplar["labels"].get("trace_id") == trace_id:
                        return dict(series["seriesLabels"])
            assert time.monotonic() < deadline, f"no exemplar of {trace_id} in {metric}"
            await asyncio.sleep(1)


REPLICATED = ("gateway", "authors", "audit", "ratelimit")


async def _log_lines(stack: Stack, process: str, trace_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of `process` (every replica of it; for traefik, its access log)
    that carry `trace_id` (lines are written in batches: waited for)."""
    programs = (
        [f"{process}-{k}" for k in range(stack.replicas(process))]
        if process in REPLICATED
        else [process]
    )
    deadline = time.monotonic() + 30
    while True:
        if process == "traefik":
            lines = stack.access_log_lines(20000)
        else:
            lines = []
            for program in programs:
                text = stack.log_path(program).read_text(errors="replace")
                lines += text.splitlines()[-20000:]
        found = []
        for line in lines:
            if trace_id in line and line.startswith("{"):
                entry = json.loads(line)
                traceparent = entry.get("request_Traceparent", "")
                if trace_id in (entry.get("trace_id"), traceparent[3:35]):
                    found.append(entry)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_a_websocket_message_carries_the_upgrades_trace_to_the_services(
    native_stack: Stack, tokens: Tokens
) -> None:
    _, parent = traceparent()
    headers = {"X-Forwarded-For": client_address(), "traceparent": parent}
    async with ws.session(native_stack.web_url, await tokens.get("editor"), headers) as socket:
        created = await socket.request(ws.CREATE_AUTHOR, {"name": f"traced-ws-{time.time_ns()}"})
        assert created["status_code"] == ws.OK, created
        await socket.request(ws.DELETE_AUTHOR, {"id": created["data"]["id"]})
    messages = frozenset({"WS CREATE_AUTHOR", "WS DELETE_AUTHOR"})
    trace = await fetch_trace(
        native_stack,
        parent,
        services={"traefik", "gateway", "authors"},
        database=True,
        operations=messages,
    )
    # Each message's PostgreSQL work hangs below its message's span.
    for query in _database_spans(trace):
        names = [s["operationName"] for s in _ancestors(trace, query)]
        assert any(name.startswith("WS ") for name in names), names


async def test_an_unsampled_request_is_logged_with_its_trace_id_and_not_traced(
    native_stack: Stack, tokens: Tokens
) -> None:
    unsampled = secrets.token_hex(16)
    _, parent = traceparent()
    async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=20) as web:
        for traced in (f"00-{unsampled}-{secrets.token_hex(8)}-00", parent):
            answer = await web.get(
                "/authors",
                params={"per_page": 1},
                headers={
                    **(await tokens.headers("viewer")),
                    "traceparent": traced,
                    "X-Forwarded-For": client_address(),
                },
            )
            assert answer.status_code == 200, answer.text
    lines = await _log_lines(native_stack, "gateway", unsampled)
    assert [e["path"] for e in lines if e["msg"] == "http_request"] == ["/authors"]
    # The sampled request sent after it reached the backend; nothing of the unsampled
    # one did (the backend answers 404 for a trace it never had).
    await fetch_trace(
        native_stack, parent, services={"traefik", "gateway", "authors"}, database=False
    )
    async with httpx.AsyncClient(base_url=native_stack.tracing_url, timeout=10) as client:
        assert (await client.get(f"/api/traces/{unsampled}")).status_code == 404
