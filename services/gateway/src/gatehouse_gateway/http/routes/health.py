"""`/health*`: public probes for load balancers, orchestrators and people."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.http.dependencies import Context
from gatehouse_gateway.schemas import HealthReport, Liveness

router = APIRouter(prefix="/health", tags=["health"])

_PROBE_TIMEOUT = 1.0
_UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"model": HealthReport, "description": "A required dependency is down"}
}


async def _redis_ok(context: GatewayContext) -> bool:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            return bool(await context.redis.ping())
    except (RedisError, OSError, TimeoutError):
        return False


async def report(context: GatewayContext) -> tuple[bool, dict[str, str]]:
    """Whether every required dependency answers, and the state of each.

    Required: the authors, audit and ratelimit services. Redis only carries
    WebSocket broadcasts, so its loss degrades the gateway without making it unready.
    """
    upstreams = context.upstreams.all()
    checks = await asyncio.gather(
        *(u.healthy(_PROBE_TIMEOUT) for u in upstreams), _redis_ok(context)
    )
    states = {u.name: ok for u, ok in zip(upstreams, checks, strict=False)}
    states["redis"] = checks[-1]
    required_ok = all(states[u.name] for u in upstreams)
    return required_ok, {name: "ok" if ok else "down" for name, ok in states.items()}


@router.get(
    "",
    response_model=HealthReport,
    summary="Dependency health",
    description="`status` is `degraded` when any dependency is down; 503 when a required "
    "one (authors, audit, ratelimit) is.",
    responses=_UNHEALTHY,
)
async def health(context: Context) -> JSONResponse:
    required_ok, services = await report(context)
    degraded = not all(state == "ok" for state in services.values())
    return JSONResponse(
        {"status": "degraded" if degraded else "ok", "services": services},
        status_code=200 if required_ok else 503,
    )


@router.get(
    "/live",
    response_model=Liveness,
    summary="Liveness",
    description="200 while the process serves. 503 `draining` from the start of a shutdown "
    "on, while requests are still served for a drain period: Traefik checks this path, so "
    "the replica leaves rotation before its port closes. Upstreams are not consulted, so "
    "their outage never takes every replica out of rotation.",
    responses={503: {"model": Liveness, "description": "Draining for shutdown"}},
)
async def live(context: Context) -> JSONResponse:
    if context.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    response_model=HealthReport,
    summary="Readiness",
    description="200 when the required upstreams answer; 503 while they do not or while "
    "the process drains for shutdown.",
    responses={503: {"model": HealthReport, "description": "Not ready"}},
)
async def ready(context: Context) -> JSONResponse:
    required_ok, services = await report(context)
    ok = required_ok and not context.draining
    degraded = not all(state == "ok" for state in services.values())
    return JSONResponse(
        {"status": "degraded" if degraded or not ok else "ok", "services": services},
        status_code=200 if ok else 503,
    )
