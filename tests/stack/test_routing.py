"""Traefik's routes: public ones answer on :8080, internal ones only on their own entrypoints."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import httpx
import pytest
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness.stack import Stack

GRPC_SERVICES = ("authors", "audit", "ratelimit")


def test_gateway_health_through_the_public_entrypoint(stack: Stack) -> None:
    response = httpx.get(f"{stack.web_url}/health/live", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_grpc_health_of_each_service_through_the_grpc_entrypoint(
    stack: Stack, service: str
) -> None:
    # The :authority picks the service, as the gateway's channels do.
    async with grpc.aio.insecure_channel(
        stack.grpc_target, options=[("grpc.default_authority", service)]
    ) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_unknown_authority_reaches_no_service(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(
        stack.grpc_target, options=[("grpc.default_authority", "nosuchservice")]
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/metrics/gateway/0",
        "/metrics/keycloak/0",
        "/api/rawdata",
        "/api/http/routers",
        "/dashboard/",
        "/debug/pprof/",
        "/ping",
        "/gatehouse.authors.v1.Authors/GetAuthor",
        "/grpc.health.v1.Health/Check",
    ],
)
def test_internal_routes_are_not_reachable_on_the_public_entrypoint(
    stack: Stack, path: str
) -> None:
    assert httpx.get(f"{stack.web_url}{path}", timeout=10).status_code == 404
    secure = httpx.get(f"{stack.https_url}{path}", timeout=10, verify=stack.tls_context())
    assert secure.status_code == 404


@pytest.mark.parametrize("process", ["gateway", "authors", "audit", "ratelimit", "keycloak"])
def test_each_process_exposes_metrics_on_the_metrics_entrypoint(stack: Stack, process: str) -> None:
    count = 1 if process == "keycloak" else stack.replicas(process)
    for k in range(count):
        response = httpx.get(f"{stack.metrics_url}/metrics/{process}/{k}", timeout=10)
        assert response.status_code == 200
        assert "# TYPE" in response.text
    # One past the last replica is no route at all.
    beyond = httpx.get(f"{stack.metrics_url}/metrics/{process}/{count}", timeout=10)
    assert beyond.status_code == 404


def test_traefik_exposes_its_own_metrics_on_the_metrics_entrypoint(stack: Stack) -> None:
    response = httpx.get(f"{stack.metrics_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert "traefik_entrypoint_requests_total" in response.text


def test_traefik_labels_its_metrics_by_entrypoint_and_service_not_router(stack: Stack) -> None:
    text = httpx.get(f"{stack.metrics_url}/metrics", timeout=10).text
    assert "traefik_service_requests_total" in text
    assert "traefik_router_requests_total" not in text


def test_traefik_profiles_on_the_api_entrypoint_only(stack: Stack) -> None:
    response = httpx.get(f"{stack.dashboard_url}/debug/pprof/cmdline", timeout=10)
    assert response.status_code == 200
    assert "traefik" in response.text


def test_the_api_and_dashboard_entrypoint_answers(stack: Stack) -> None:
    assert httpx.get(f"{stack.dashboard_url}/ping", timeout=10).text == "OK"
    routers = httpx.get(f"{stack.dashboard_url}/api/http/routers", timeout=10).json()
    assert {"gateway-read@file", "gateway-write@file", "keycloak@file"} <= {
        router["name"] for router in routers
    }


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_websockets_pass_both_public_entrypoints(stack: Stack, secure: bool) -> None:
    base = stack.https_url if secure else stack.web_url
    token = await asyncio.to_thread(stack.token, "viewer")
    async with websockets.connect(
        base.replace("http", "ws", 1) + "/web",
        additional_headers={"Authorization": f"Bearer {token}", "Origin": base},
        ssl=stack.tls_context() if secure else None,
    ) as socket:
        assert json.loads(await socket.recv())["type"] == "auth_ok"
        # Idle for a while, the socket is still served: the entrypoints have no read timeout.
        await asyncio.sleep(2)
        pong = await socket.ping()
        await asyncio.wait_for(pong, timeout=5)


def test_api_requests_are_spread_over_every_gateway_replica(native_stack: Stack) -> None:
    marker = f"spread-{uuid.uuid4()}"
    replicas = native_stack.replicas("gateway")
    with httpx.Client(base_url=native_stack.web_url, timeout=10) as client:
        for n in range(10 * replicas):
            client.get("/health/live", headers={"X-Request-ID": f"{marker}-{n}"})
    deadline = time.monotonic() + 10
    while True:
        lines = native_stack.access_log_lines()
        served = {
            json.loads(line)["ServiceAddr"]
            for line in lines
            if marker in line and '"entryPointName":"web"' in line
        }
        wanted = {f"127.0.0.1:{8000 + 100 * k}" for k in range(replicas)}
        if served == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served == wanted
