"""`/audit-logs`: the audit trail, for auditors and administrators."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from gatehouse_gateway import operations
from gatehouse_gateway.http.dependencies import AuditReader, Context
from gatehouse_gateway.http.responses import RATE_LIMIT_HEADERS, api_errors
from gatehouse_gateway.operations import MAX_PER_PAGE, AuditFilter, Pagination
from gatehouse_gateway.schemas import (
    MAX_ID,
    MAX_PAGE,
    PRINTABLE_PATTERN,
    AuditLog,
    AuditLogPage,
    Outcome,
)

router = APIRouter(prefix="/audit-logs", tags=["audit-logs"])

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]
Cursor = Annotated[
    str | None, Query(max_length=1024, description="`meta.next_cursor` of the previous page")
]
# No control characters (Unicode category Cc): no stored text has them to match.
Text = Annotated[str | None, Query(max_length=255, pattern=PRINTABLE_PATTERN)]
# pydantic alone would also read a number as seconds since the epoch; the contract says
# ISO 8601, so the value must at least start as a calendar date does.
_ISO_8601_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    if isinstance(value, str) and not _ISO_8601_START.match(value):
        raise ValueError("must be an ISO 8601 date or date and time")
    return value


Date = Annotated[
    datetime | None,
    BeforeValidator(_iso_8601),
    Query(
        description="ISO 8601 date or date and time (`2026-11-27`, `2026-11-27T08:00:00Z`); "
        "without a zone, UTC"
    ),
]

_PAGE_DOC = {**api_errors(), 200: {"headers": RATE_LIMIT_HEADERS}}


def _pagination(
    page: Page = 1, per_page: PerPage = operations.DEFAULT_PER_PAGE, cursor: Cursor = None
) -> Pagination:
    return Pagination(page=page, per_page=per_page, cursor=cursor)


def _filter(
    action_type: Text = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    start_date: Date = None,
    end_date: Date = None,
) -> AuditFilter:
    return AuditFilter(
        action_type=action_type, outcome=outcome, start_date=start_date, end_date=end_date
    )


# The query parameters both listings take.
PageQuery = Annotated[Pagination, Depends(_pagination)]
FilterQuery = Annotated[AuditFilter, Depends(_filter)]


@router.get(
    "",
    response_model=AuditLogPage,
    summary="Query audit events",
    description="Newest first. `start_date` is inclusive, `end_date` exclusive. "
    "Role: view-audit-logs (or admin).",
    responses=_PAGE_DOC,
)
async def list_audit_logs(
    _: AuditReader,
    context: Context,
    pagination: PageQuery,
    filters: FilterQuery,
    user_id: Text = None,
    username: Text = None,
    resource: Annotated[str | None, Query(max_length=2048, pattern=PRINTABLE_PATTERN)] = None,
) -> Response:
    narrowed = replace(filters, user_id=user_id, username=username, resource=resource)
    return JSONResponse(await operations.list_audit_logs(context.upstreams, narrowed, pagination))


@router.get(
    "/user/{user_id}",
    response_model=AuditLogPage,
    summary="Query one user's audit events",
    description="As `/audit-logs` with `user_id` fixed. Role: view-audit-logs (or admin).",
    responses=_PAGE_DOC,
)
async def list_user_audit_logs(
    _: AuditReader,
    context: Context,
    user_id: Annotated[
        str, Path(max_length=255, pattern=PRINTABLE_PATTERN, description="The user's `sub`")
    ],
    pagination: PageQuery,
    filters: FilterQuery,
) -> Response:
    narrowed = replace(filters, user_id=user_id)
    return JSONResponse(await operations.list_audit_logs(context.upstreams, narrowed, pagination))


@router.get(
    "/{id}",
    response_model=AuditLog,
    summary="Get one audit event",
    description="404 when missing. Role: view-audit-logs (or admin).",
    responses={**api_errors(404), 200: {"headers": RATE_LIMIT_HEADERS}},
)
async def get_audit_log(
    _: AuditReader,
    context: Context,
    id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> Response:
    return JSONResponse(await operations.get_audit_log(context.upstreams, id))
