"""Every process's log in one store (docs/logging.md), against the stack's real
VictoriaLogs and its shipper: one query finds a request's lines in each process it
reached (natively and in the compose stack); natively, one query by trace id finds Traefik's
public hop and its untraced gRPC hop, lines written while the store is
down arrive once it is back (or their drop is counted), no credential a request carries
is stored, and the store is not reachable through the public entrypoints."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import time
import uuid
from typing import Any

import httpx

from tests.harness.backends import REPO
from tests.harness.stack import Stack
from tests.sre.prometheus import poll

SHIPPER_METRICS_URL = "http://127.0.0.1:8888/metrics"
# Drops the shipper counts (docs/logging.md, Delivery, buffering and drops).
DROP_METRICS = (
    "otelcol_exporter_enqueue_failed_log_records_total",
    "otelcol_exporter_send_failed_log_records_total",
)
# The realm's service client and its development-only secret (docs/operations.md).
SERVICE_CLIENT = "gatehouse-service"
SERVICE_CLIENT_SECRET = "gatehouse-service-dev-secret"
# How long a line may take from its file into the store on a loaded machine.
SHIPPED_WITHIN = 120.0


async def query(stack: Stack, logsql: str, start: float | None = None) -> list[dict[str, Any]]:
    """The entries of a LogsQL query (from `start`, a Unix time, when given)."""
    params = {"query": logsql}
    if start is not None:
        params["start"] = f"{start:.3f}"
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{stack.logs_url}/select/logsql/query", params=params)
    response.raise_for_status()
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def drops() -> float:
    """Log records the shipper has dropped since it started."""
    async with httpx.AsyncClient(timeout=30) as client:
        page = (await client.get(SHIPPER_METRICS_URL)).text
    total = 0.0
    for name in DROP_METRICS:
        for match in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", page, re.M):
            total += float(match.group(1))
    return total


async def services_of(stack: Stack, request_id: str, wanted: set[str]) -> set[str]:
    """The processes whose lines carry `request_id`, once they include `wanted`."""

    async def found() -> set[str] | None:
        entries = await query(stack, f'request_id:="{request_id}"')
        services = {entry["service"] for entry in entries}
        return services if services >= wanted else None

    return await poll(found, SHIPPED_WITHIN, f"lines of {sorted(wanted)} for {request_id}")


async def test_one_query_finds_a_requests_lines_in_every_process_it_reached(
    stack: Stack,
) -> None:
    request_id = f"logs-{uuid.uuid4()}"
    token = stack.token("editor")
    async with httpx.AsyncClient(base_url=stack.web_url, timeout=30) as web:
        response = await web.post(
            "/authors",
            json={"name": f"Logged {request_id}"},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
        )
    assert response.status_code == 201, response.text
    # Traefik's access line, the gateway's, the authors service that created the author
    # and the audit writer that stored the event.
    services = await services_of(stack, request_id, {"traefik", "gateway", "authors", "audit"})
    assert len(services) >= 4
    entries = await query(stack, f'request_id:="{request_id}" service:gateway _msg:=http_request')
    assert [(entry["route"], entry["status"]) for entry in entries] == [("/authors", "201")]
    assert float(entries[0]["duration_ms"]) > 0
    assert entries[0]["user_id"]
    assert entries[0]["replica"].isdigit()


async def test_one_query_by_trace_id_finds_both_of_traefiks_hops(native_stack: Stack) -> None:
    # Traefik traces its public entrypoints, not the internal gRPC one: the access line of
    # the gateway's call to the authors service gets its trace id from the traceparent
    # header the call carried (deploy/otelcol/config.yaml), which is not stored itself.
    trace_id = secrets.token_hex(16)
    token = native_stack.token("editor")
    async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=30) as web:
        response = await web.post(
            "/authors",
            json={"name": f"Traced {trace_id}"},
            headers={
                "Authorization": f"Bearer {token}",
                "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-00",
            },
        )
    assert response.status_code == 201, response.text

    async def found() -> list[dict[str, Any]] | None:
        entries = await query(native_stack, f'trace_id:="{trace_id}" service:traefik')
        return entries if len(entries) >= 2 else None

    entries = await poll(found, SHIPPED_WITHIN, f"Traefik's lines of trace {trace_id}")
    assert sorted((e["entryPointName"], e["_msg"]) for e in entries) == [
        ("grpc", "POST /gatehouse.authors.v1.AuthorsService/CreateAuthor"),
        ("web", "POST /authors"),
    ]
    assert not [name for e in entries for name in e if "traceparent" in name.lower()]
    # Both hops carry the request id the gateway gave the request (the client sent none),
    # and every line the request caused, in every process it reached, the trace id.
    request_id = response.headers["x-request-id"]
    assert {e["request_id"] for e in entries} == {request_id}
    reached = await services_of(
        native_stack, request_id, {"traefik", "gateway", "authors", "audit"}
    )
    lines = await query(native_stack, f'request_id:="{request_id}"')
    assert {(e["service"], e.get("trace_id")) for e in lines} == {(s, trace_id) for s in reached}


async def test_lines_written_while_the_store_is_down_arrive_once_it_is_back(
    native_stack: Stack,
) -> None:
    dropped_before = await drops()
    prefix = f"outage-{uuid.uuid4().hex[:12]}"
    request_ids = [f"{prefix}-{n}" for n in range(20)]
    native_stack.stop("victoria-logs")
    try:
        async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=30) as web:
            for request_id in request_ids:
                response = await web.get("/health/live", headers={"X-Request-ID": request_id})
                assert response.status_code == 200
    finally:
        native_stack.start("victoria-logs")

    async def all_arrived() -> bool | None:
        entries = await query(native_stack, f'service:gateway request_id:"{prefix}"')
        arrived = {entry["request_id"] for entry in entries}
        return True if arrived >= set(request_ids) else None

    try:
        await poll(all_arrived, SHIPPED_WITHIN, f"the {len(request_ids)} lines of {prefix}")
    except AssertionError:
        # Whatever did not arrive must have been counted as dropped.
        assert await drops() > dropped_before
        raise
    assert await drops() == dropped_before


async def test_traefiks_access_log_is_rotated_and_shipped_on_both_sides_of_a_rotation(
    native_stack: Stack,
) -> None:
    assert native_stack.state_dir is not None
    current = native_stack.state_dir / "logs" / "traefik-access.log"
    rotated = current.with_name("traefik-access.log.1")
    before, after = f"rotation-before-{uuid.uuid4()}", f"rotation-after-{uuid.uuid4()}"

    async def get(request_id: str) -> None:
        async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=30) as web:
            response = await web.get("/health/live", headers={"X-Request-ID": request_id})
        assert response.status_code == 200

    async def written(request_id: str) -> bool | None:
        return True if request_id in current.read_text(errors="replace") else None

    await get(before)
    # Traefik writes the access line itself, not through supervisord's output.
    await poll(lambda: written(before), 30, f"{before} in {current.name}")
    assert before not in native_stack.log_path("traefik").read_text(errors="replace")
    # What the logrotate program does to a file over 20 MB, now.
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "scripts/logrotate.sh", "--force"],
        cwd=REPO,
        env={**os.environ, "GATEHOUSE_STATE": str(native_stack.state_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert before in rotated.read_text(errors="replace")
    # Traefik reopened the file: the next line is in the new one.
    await get(after)
    await poll(lambda: written(after), 30, f"{after} in a new {current.name}")
    assert after not in rotated.read_text(errors="replace")
    # The shipper read the end of the renamed file and the new one.
    await services_of(native_stack, before, {"traefik"})
    await services_of(native_stack, after, {"traefik"})


async def test_no_token_password_or_cookie_a_request_carries_is_stored(
    native_stack: Stack,
) -> None:
    started = time.time() - 5
    token = native_stack.token("viewer")
    password = f"pw-{secrets.token_hex(16)}"
    cookie = f"ck-{secrets.token_hex(16)}"
    request_id = f"secrets-{uuid.uuid4()}"
    async with httpx.AsyncClient(base_url=native_stack.web_url, timeout=30) as web:
        # A bearer token and a cookie through the gateway ...
        read = await web.get(
            "/authors",
            headers={
                "Authorization": f"Bearer {token}",
                "Cookie": f"session={cookie}",
                "X-Request-ID": request_id,
            },
        )
        assert read.status_code == 200
        # ... a wrong password in a body to Keycloak through the same edge ...
        refused = native_stack.token_response("viewer", password)
        assert refused.status_code == 401
        # ... a client secret to Keycloak (the service client's client-credentials grant) ...
        service = await web.post(
            "/auth/realms/gatehouse/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": SERVICE_CLIENT,
                "client_secret": SERVICE_CLIENT_SECRET,
            },
        )
        assert service.status_code == 200, service.text
        # ... and a password in a body to the gateway.
        await web.post(
            "/authors",
            json={"name": "x", "password": password},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": f"{request_id}-body"},
        )
    # Once the later request's lines are in, so are the earlier ones'.
    await services_of(native_stack, f"{request_id}-body", {"traefik", "gateway"})
    stored = json.dumps(await query(native_stack, "*", start=started))
    signature = token.rsplit(".", 1)[1]
    issued = service.json()["access_token"]
    for secret in (token, signature, password, cookie, SERVICE_CLIENT_SECRET, issued):
        assert secret not in stored
    # The access line shows that an Authorization header came, redacted.
    redacted = await query(native_stack, f'request_id:="{request_id}" service:traefik')
    assert "REDACTED" in json.dumps(redacted)


async def test_the_stores_api_and_ui_are_not_reachable_through_the_public_entrypoint(
    native_stack: Stack,
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        # One line is enough to show the API answers; `*` alone would stream the whole store.
        direct = await client.get(
            f"{native_stack.logs_url}/select/logsql/query", params={"query": "*", "limit": "1"}
        )
    assert direct.status_code == 200
    async with httpx.AsyncClient(timeout=30, verify=native_stack.tls_context()) as client:
        for url in (native_stack.web_url, native_stack.https_url):
            for path in ("/select/logsql/query?query=*", "/select/vmui/", "/insert/jsonline"):
                answer = await client.get(f"{url}{path}")
                assert answer.status_code == 404, f"{url}{path}: {answer.status_code}"
