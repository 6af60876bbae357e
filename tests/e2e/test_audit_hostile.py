"""Hostile input never costs anyone else their audit trail, on the running platform.

Rounds of requests meant to break audit events — an encoded NUL in the path
(`/authors%00`), invalid UTF-8 and encoded surrogates in path and query, invalid UTF-8 in
headers, a JSON body with a lone surrogate, raw non-UTF-8 bytes on the wire — are sent
through Traefik at the same moment as the ordinary writes of the realm's editor (create,
update, delete), so that their events share the gateway's audit batches. Every ordinary
request's event must be in the audit database (by request id), no audit pipeline may
count a drop, and the audit service sets nothing aside: the gateway made every event
storable. The audit service's own defence is shown on its own: a batch with an event
PostgreSQL cannot hold, sent straight to the running service, is stored but for that
event, which goes to the dead-letter table and is counted in `audit_dead_letters_total`.
And a flood of refused requests from one client costs a few events that together count
every refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from gatehouse_audit.settings import Settings as AuditSettings
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.chaos.observe import (
    AUDIT_PIPELINE,
    audit_counts,
    dropped_since,
    metrics_url,
    replicas,
    scrape,
    stored_request_ids,
    supervised,
    total,
)
from tests.e2e.conftest import Tokens, client_address
from tests.harness.stack import Stack
from tests.sre.prometheus import poll

ROUNDS = 6
AUDIT_WITHIN_SECONDS = 20.0
# A refusal window of the stack's gateways (GATEWAY_AUDIT_REFUSAL_WINDOW_SECONDS) and more.
REFUSAL_EVENTS_WITHIN_SECONDS = 30.0
FLOOD = 30
# The flood's refusals: reason -> (status, outcome) of their events.
REFUSED = {
    "authentication_failed": (401, "permission_denied"),
    "rate_limit_exceeded": (429, "error"),
}


async def _raw_request(stack: Stack, request_line: bytes, headers: bytes = b"") -> bytes:
    """Bytes no HTTP client library sends: a request written to Traefik's socket as given."""
    parts = urlsplit(stack.web_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        writer.write(
            request_line
            + b"\r\nHost: localhost\r\nX-Forwarded-For: "
            + client_address().encode()
            + b"\r\n"
            + headers
            + b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(200), 15)
    finally:
        writer.close()


def _hostile(stack: Stack, web: httpx.AsyncClient, tag: str, n: int) -> list[Awaitable[object]]:
    rid = f"hostile-{tag}-{n}"
    return [
        web.get("/authors%00", headers={"X-Request-ID": f"{rid}-nul"}),
        web.get("/authors/%ED%A0%80%FF", headers={"X-Request-ID": f"{rid}-path"}),
        web.get("/authors?search=%00%ED%B0%80%C3", headers={"X-Request-ID": f"{rid}-query"}),
        web.get(
            "/authors/%00",
            headers={b"User-Agent": b"bad\xff\xfeagent", b"X-Request-ID": f"{rid}-header".encode()},
        ),
        web.post(
            "/authors",
            content=b'{"name": "\\ud800\\u0000"}',
            headers={"Content-Type": "application/json", "X-Request-ID": f"{rid}-body"},
        ),
        _raw_request(stack, b"GET /authors/\xff\xfe\xed\xa0\x80 HTTP/1.1"),
        _raw_request(stack, b"GET /authors HTTP/1.1", b"User-Agent: \xc3\x28\xed\xa0\x80\r\n"),
    ]


async def test_hostile_requests_beside_ordinary_writes_lose_no_event(
    stack: Stack, tokens: Tokens
) -> None:
    tag = uuid.uuid4().hex[:8]
    programs = [p for name in AUDIT_PIPELINE for p in replicas(supervised(stack), name)]
    ordinary: set[str] = set()
    rounds = itertools.count()
    async with (
        httpx.AsyncClient(base_url=stack.web_url, timeout=20) as scrapes,
        httpx.AsyncClient(
            base_url=stack.web_url, timeout=20, headers={"X-Forwarded-For": client_address()}
        ) as editor,
        httpx.AsyncClient(
            base_url=stack.web_url, timeout=20, headers={"X-Forwarded-For": client_address()}
        ) as hostile,
    ):

        async def write(step: str, method: str, url: str, expected: int, **kw: Any) -> str:
            """One of the editor's writes, sent at the same moment as a round of hostile
            requests; the location it answers with, if any. Sent again after Retry-After
            when a rate limit the suites share refuses it: a refusal is audited only in
            aggregate, so only the answered attempt's request id is expected."""
            for attempt in range(4):
                request_id = f"write-{tag}-{step}-{attempt}"
                headers = {**await tokens.headers("editor"), "X-Request-ID": request_id}
                answer, *others = await asyncio.gather(
                    editor.request(method, url, headers=headers, **kw),
                    *_hostile(stack, hostile, tag, next(rounds)),
                )
                for other in others:
                    if isinstance(other, httpx.Response):
                        assert other.status_code < 500, (other.request.url, other.text)
                assert isinstance(answer, httpx.Response)
                if answer.status_code != 429:
                    assert answer.status_code == expected, answer.text
                    ordinary.add(request_id)
                    location: str = answer.headers.get("Location", "")
                    return location
                await asyncio.sleep(min(float(answer.headers.get("Retry-After", "1")), 20))
            raise AssertionError(f"{method} {url} stayed rate limited")

        before = await audit_counts(scrapes, programs)
        set_aside = await _dead_letters(scrapes, stack)
        for n in range(ROUNDS):
            name = f"hostile-neighbour-{tag}-{n}"
            location = await write(f"{n}-create", "POST", "/authors", 201, json={"name": name})
            renamed = {"name": f"{name}-renamed"}
            await write(f"{n}-update", "PUT", location, 200, json=renamed)
            await write(f"{n}-delete", "DELETE", location, 204)

        async def all_stored() -> bool | None:
            return True if await stored_request_ids(ordinary) == ordinary else None

        await poll(all_stored, AUDIT_WITHIN_SECONDS, "the audit event of every ordinary write")
        after = await audit_counts(scrapes, programs)
        assert dropped_since(before, after) == 0, [c.describe() for c in after.values()]
        assert await _dead_letters(scrapes, stack) == set_aside

    # The hostile requests left storable events of their own, escaped.
    connection = await asyncpg.connect(AuditSettings().database_url)
    try:
        rows = await connection.fetch(
            "SELECT request_id, resource, user_agent FROM audit_events WHERE request_id LIKE $1",
            f"hostile-{tag}-%",
        )
    finally:
        await connection.close()
    by_id = {row["request_id"]: row for row in rows}
    nul = by_id.get(f"hostile-{tag}-0-nul")
    assert nul is not None, sorted(by_id)
    assert nul["resource"] == "/authors\\u0000"


async def test_an_event_the_database_cannot_hold_is_set_aside_by_the_running_service(
    stack: Stack,
) -> None:
    tag = uuid.uuid4().hex[:8]

    def event(request_id: str, resource: str) -> audit_pb2.AuditEvent:
        message = audit_pb2.AuditEvent(
            event_id=str(uuid.uuid4()),
            user_id=f"e2e-dead-letter-{tag}",
            action_type="GET /authors",
            resource=resource,
            outcome=audit_pb2.OUTCOME_SUCCESS,
            request_id=request_id,
            request_data="{}",
            response_status=200,
        )
        message.timestamp.FromDatetime(datetime.now(UTC))
        return message

    batch = [event(f"dl-{tag}-0", "/authors"), event(f"dl-{tag}-bad", "/authors\x00")]
    batch.append(event(f"dl-{tag}-2", "/authors"))
    async with httpx.AsyncClient(timeout=20) as scrapes:
        set_aside = await _dead_letters(scrapes, stack)
        channel = open_channel(stack.grpc_target, authority="audit", max_attempts=1)
        try:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            ack = await stub.IngestBatchUnary(
                audit_pb2.IngestBatch(sequence=1, events=batch), timeout=15
            )
        finally:
            await channel.close()
        assert (ack.accepted, ack.code) == (3, 0)
        now = await _dead_letters(scrapes, stack)
        assert (now["invalid"] - set_aside["invalid"], now["refused"]) == (1, set_aside["refused"])
    assert await stored_request_ids({f"dl-{tag}-0", f"dl-{tag}-2", f"dl-{tag}-bad"}) == {
        f"dl-{tag}-0",
        f"dl-{tag}-2",
    }
    connection = await asyncpg.connect(AuditSettings().database_url)
    try:
        letter = await connection.fetchrow(
            "SELECT reason, event FROM audit_dead_letters WHERE event_id = $1",
            uuid.UUID(batch[1].event_id),
        )
    finally:
        await connection.close()
    assert letter is not None
    assert letter["reason"] == "resource must not contain NUL characters"
    assert json.loads(letter["event"])["resource"] == "/authors\\u0000"


async def test_a_flood_of_refusals_is_a_few_events_that_count_every_refusal(
    stack: Stack,
) -> None:
    tag = uuid.uuid4().hex[:8]
    address = client_address()
    gateways = replicas(supervised(stack), "gateway")
    async with httpx.AsyncClient(
        base_url=stack.web_url, timeout=20, headers={"X-Forwarded-For": address}
    ) as anonymous:
        before = await _refusals(anonymous, gateways)
        for n in range(FLOOD):
            refused = await anonymous.post(
                "/authors",
                json={"name": f"flood-{tag}", "password": "never stored"},
                headers={"X-Request-ID": f"flood-{tag}-{n}"},
            )
            # 429 when a rate limit the suites share on this address runs out first.
            assert refused.status_code in (401, 429), refused.text
        counted = await _refusals(anonymous, gateways)
    assert counted - before >= FLOOD

    async def all_counted() -> list[asyncpg.Record] | None:
        connection = await asyncpg.connect(AuditSettings().database_url)
        try:
            rows = await connection.fetch(
                "SELECT request_id, request_data, response_status, outcome FROM audit_events "
                "WHERE ip_address = $1 AND action_type = 'POST /authors' "
                "AND request_id LIKE $2",
                address,
                f"flood-{tag}-%",
            )
        finally:
            await connection.close()
        total_count = sum(json.loads(r["request_data"])["refusal"]["count"] for r in rows)
        return rows if total_count == FLOOD else None

    rows = await poll(all_counted, REFUSAL_EVENTS_WITHIN_SECONDS, "refusal events counting all")
    # One event at once and one per window, per reason and gateway replica that answered
    # (the first is counted into a window too when an earlier test of this address left
    # one open).
    assert len(rows) <= 2 * len(REFUSED) * len(gateways)
    for row in rows:
        assert "never stored" not in row["request_data"]
        reason = json.loads(row["request_data"])["refusal"]["reason"]
        assert (row["response_status"], row["outcome"]) == REFUSED[reason]


async def _refusals(client: httpx.AsyncClient, gateways: list[str]) -> float:
    """`gateway_audit_refusals_total` of the flood's reasons, over the gateways."""
    counted = 0.0
    for gateway in gateways:
        samples = await scrape(client, metrics_url(gateway))
        for reason in REFUSED:
            counted += total(samples, f'gateway_audit_refusals_total{{reason="{reason}"}}')
    return counted


async def _dead_letters(client: httpx.AsyncClient, stack: Stack) -> dict[str, float]:
    """`audit_dead_letters_total` by reason, summed over the running audit replicas."""
    counted: dict[str, float] = {}
    for program in replicas(supervised(stack), "audit"):
        samples = await scrape(client, metrics_url(program))
        for reason in ("invalid", "refused"):
            name = f'audit_dead_letters_total{{reason="{reason}"}}'
            counted[reason] = counted.get(reason, 0.0) + total(samples, name)
    return counted
