"""The in-process baseline of bench_platform: the same work as Gatehouse in ONE process.

`python -m benchmarks.baseline --port N` serves, under one uvicorn worker (uvloop,
httptools), what a request to Gatehouse does across the gateway and three services, in
process:

- the bearer token: RS256 verification by the gateway's own `TokenVerifier` (pyjwt, the
  realm's JWKS fetched from Keycloak once and cached, verified tokens remembered until
  they expire, exactly as the gateway does);
- the rate-limit decision: the ratelimit service's own `RateLimiter` and `RedisStore`
  (one EVALSHA of its sliding-window Lua script, domain `http` with the `user` and
  `remote_address` descriptors, or `ws_messages` with `user`), on the rules file given;
- the row: one asyncpg statement on the `authors` database (a read, or the update of
  PUT with its version bump, as the authors service's repository does);
- the audit event: a row in the audit service's shape, queued in memory and written
  to the `audit` database's `audit_events` every AUDIT_FLUSH_SECONDS by one COPY
  (asyncpg `copy_records_to_table`, through the audit service's own repository).

Routes: GET and PUT `/authors/{id}`, GET `/health/live` (Traefik's health check) and the
WebSocket `/web` (Authorization header on the upgrade; GET_AUTHOR frames answered in
order). What it leaves out, since one process needs none of it: gRPC, the services'
access logs and Prometheus metrics (but the limiter's own counters), the pub/sub event
of an update (no other replica to tell) and WebSocket connection leases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gatehouse_audit.events import Row
from gatehouse_audit.repository import AuditRepository
from gatehouse_gateway.auth import Principal, TokenVerifier
from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_gateway.http.client_ip import TrustedProxies
from gatehouse_gateway.rbac import Role, authorize, rate_limit_tier
from gatehouse_gateway.schemas import AuthorIn
from gatehouse_gateway.settings import Settings as GatewaySettings
from gatehouse_kit.redaction import request_data_json
from gatehouse_kit.runtime import run
from gatehouse_ratelimit.limiter import Decision, Descriptor, RateLimiter
from gatehouse_ratelimit.rules import RulesFile
from gatehouse_ratelimit.store import RedisStore

AUTHORS_URL = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/authors"
AUDIT_URL = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/audit"
REDIS_URL = "redis://127.0.0.1:6379/0"
# How often queued audit rows are written (one COPY per flush).
AUDIT_FLUSH_SECONDS = 0.005
POOL_SIZE = 16

_GET = "SELECT id, name, created_at, updated_at, version FROM authors WHERE id = $1"
_UPDATE = (
    "UPDATE authors SET name = $2, version = version + 1, updated_at = now() "
    "WHERE id = $1 RETURNING id, name, created_at, updated_at, version"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _author(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _rate_headers(decision: Decision) -> dict[str, str]:
    """`X-RateLimit-*` of the tightest limit, as the gateway answers them."""
    limited = [s for s in decision.statuses if s.limit is not None and not s.shadow]
    if not limited:
        return {}
    tightest = min(limited, key=lambda s: s.remaining)
    assert tightest.limit is not None
    return {
        "X-RateLimit-Limit": str(tightest.limit.requests_per_unit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(int(tightest.reset_seconds + 0.999999)),
    }


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.payload(), error.status, headers=error.headers)


@dataclass
class Monolith:
    """What every request uses: the verifier, the limiter, the pools, the audit queue."""

    verifier: TokenVerifier
    limiter: RateLimiter
    store: RedisStore
    authors: asyncpg.Pool
    audit: AuditRepository
    proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies(["127.0.0.1/32"]))
    queued: list[Row] = field(default_factory=list)

    def audit_row(
        self,
        principal: Principal,
        *,
        action: str,
        resource: str,
        ip: str,
        user_agent: str,
        request_id: str,
        request_data: Any,
        status: int,
        success: bool,
        started: float,
    ) -> None:
        """Queue one audit event as the audit service stores it (gatehouse_audit.events):
        `status` is the HTTP status or the WebSocket status_code."""
        self.queued.append(
            (
                str(uuid.uuid4()),
                datetime.now(UTC),
                "success" if success else "error",
                sorted(principal.roles),
                principal.user_id,
                principal.username,
                action,
                resource,
                ip,
                user_agent,
                request_id,
                request_data_json(request_data),
                "",
                status,
                (time.perf_counter() - started) * 1000,
            )
        )

    async def flush_audit(self) -> None:
        """Write the queued audit rows every AUDIT_FLUSH_SECONDS, one COPY each time."""
        while True:
            await asyncio.sleep(AUDIT_FLUSH_SECONDS)
            if self.queued:
                rows, self.queued = self.queued, []
                await self.audit.write(rows)


def create_app(rules_path: str, key_prefix: str) -> FastAPI:
    """The baseline application; its resources open in the lifespan."""
    state: dict[str, Monolith] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings = GatewaySettings(
            issuer="http://localhost:8080/auth/realms/gatehouse",
            jwks_url="http://127.0.0.1:8180/auth/realms/gatehouse/protocol/openid-connect/certs",
            client_id="gatehouse-web",
        )
        store = RedisStore(REDIS_URL, timeout_seconds=0.1, key_prefix=key_prefix)
        await store.load_scripts()
        monolith = Monolith(
            verifier=TokenVerifier(settings),
            limiter=RateLimiter(store, RulesFile(Path(rules_path)), "open"),
            store=store,
            authors=await asyncpg.create_pool(AUTHORS_URL, min_size=POOL_SIZE, max_size=POOL_SIZE),
            audit=await AuditRepository.connect(AUDIT_URL, max_size=2),
        )
        state["m"] = monolith
        flusher = asyncio.create_task(monolith.flush_audit())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            if monolith.queued:
                await monolith.audit.write(monolith.queued)
            await monolith.authors.close()
            await monolith.audit.close()
            await monolith.verifier.aclose()
            await store.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    async def admit(request: Request, role: Role) -> tuple[Principal, str, Decision]:
        """The caller, its address and the rate-limit decision; ApiError when refused."""
        m = state["m"]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, ErrorCode.AUTHENTICATION_FAILED, "missing bearer token")
        principal = await m.verifier.verify(token)
        if not authorize(principal, role):
            raise ApiError(403, ErrorCode.PERMISSION_DENIED, f"requires {role}")
        client = request.client.host if request.client else None
        ip = m.proxies.client_ip(client, request.headers.get("x-forwarded-for"))
        descriptors = [
            Descriptor((("user", principal.user_id),)),
            Descriptor((("remote_address", ip),)),
        ]
        decision = await m.limiter.decide("http", descriptors, tier=rate_limit_tier(principal))
        if decision.over:
            raise ApiError(429, ErrorCode.RATE_LIMIT_EXCEEDED, "rate limit exceeded")
        return principal, ip, decision

    def answer(
        request: Request,
        principal: Principal,
        ip: str,
        decision: Decision,
        row: asyncpg.Record | None,
        request_data: Any,
        started: float,
    ) -> Response:
        m = state["m"]
        request_id = str(uuid.uuid4())
        status = 200 if row is not None else 404
        m.audit_row(
            principal,
            action=f"{request.method} /authors/{{id}}",
            resource=request.url.path,
            ip=ip,
            user_agent=request.headers.get("user-agent", ""),
            request_id=request_id,
            request_data=request_data,
            status=status,
            success=status < 400,
            started=started,
        )
        headers = {"X-Request-ID": request_id, **_rate_headers(decision)}
        if row is None:
            response = _error(ApiError(404, ErrorCode.NOT_FOUND, "author not found"))
        else:
            response = JSONResponse(_author(row), headers={"ETag": f'"{row["version"]}"'})
        response.headers.update(headers)
        return response

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/authors/{author_id}")
    async def get_author(request: Request, author_id: int) -> Response:
        started = time.perf_counter()
        try:
            principal, ip, decision = await admit(request, Role.GET_AUTHORS)
        except ApiError as error:
            return _error(error)
        row = await state["m"].authors.fetchrow(_GET, author_id)
        data = {"path": {"id": author_id}}
        return answer(request, principal, ip, decision, row, data, started)

    @app.put("/authors/{author_id}")
    async def put_author(request: Request, author_id: int) -> Response:
        started = time.perf_counter()
        try:
            principal, ip, decision = await admit(request, Role.UPDATE_AUTHOR)
        except ApiError as error:
            return _error(error)
        try:
            body = AuthorIn.model_validate_json(await request.body())
        except ClientDisconnect:
            # wrk closes its connections at the end of a run, requests in flight or not.
            return Response(status_code=499)
        except ValidationError:
            return _error(ApiError(400, ErrorCode.VALIDATION_ERROR, "invalid body"))
        try:
            row = await state["m"].authors.fetchrow(_UPDATE, author_id, body.name)
        except asyncpg.UniqueViolationError:
            return _error(ApiError(409, ErrorCode.CONFLICT, "the name is taken"))
        data = {"path": {"id": author_id}, "body": {"name": body.name}}
        return answer(request, principal, ip, decision, row, data, started)

    @app.websocket("/web")
    async def web(websocket: WebSocket) -> None:
        m = state["m"]
        _, _, token = websocket.headers.get("authorization", "").partition(" ")
        try:
            principal = await m.verifier.verify(token)
        except ApiError:
            await websocket.close(4001, "invalid token")
            return
        await websocket.accept()
        await websocket.send_text(
            json.dumps({"type": "auth_ok", "expires_at": int(principal.expires_at)})
        )
        client = websocket.client.host if websocket.client else None
        ip = m.proxies.client_ip(client, websocket.headers.get("x-forwarded-for"))
        user_agent = websocket.headers.get("user-agent", "")
        tier = rate_limit_tier(principal)
        descriptors = [Descriptor((("user", principal.user_id),))]
        try:
            while True:
                text = await websocket.receive_text()
                started = time.perf_counter()
                message = json.loads(text)
                decision = await m.limiter.decide("ws_messages", descriptors, tier=tier)
                if decision.over:
                    status, data = 6, {"code": "rate_limit_exceeded", "msg": "rate limit"}
                else:
                    row = await m.authors.fetchrow(_GET, message["data"]["id"])
                    status, data = (0, _author(row)) if row else (4, {"code": "not_found"})
                await websocket.send_text(
                    json.dumps(
                        {
                            "pkg_id": message["pkg_id"],
                            "req_id": message["req_id"],
                            "status_code": status,
                            "meta": None,
                            "data": data,
                        }
                    )
                )
                m.audit_row(
                    principal,
                    action="WS:GET_AUTHOR",
                    resource=f"/authors/{message['data']['id']}",
                    ip=ip,
                    user_agent=user_agent,
                    request_id=message["req_id"],
                    request_data=message["data"],
                    status=status,
                    success=status == 0,
                    started=started,
                )
        except (WebSocketDisconnect, OSError):
            # The client went away (at the end of a run, with answers still to send).
            return

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rules", required=True, help="the rate-limit rules file")
    parser.add_argument("--key-prefix", default="bench-baseline:", help="of its Redis keys")
    args = parser.parse_args()
    # As the gateway serves (gatehouse_gateway.server.uvicorn_config), on the services'
    # runtime (uvloop, gc.freeze).
    config = uvicorn.Config(
        create_app(args.rules, args.key_prefix),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        ws=WebSocketsSansIOProtocol,
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
