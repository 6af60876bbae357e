"""The one definition of roles, and how HTTP routes and WebSocket handlers demand them.

`admin` satisfies every role: the realm's admin user holds every role, and `admin`
reads audit logs in place of `view-audit-logs` (docs/api.md, Authentication and roles),
so a realm that gives an administrator only `admin` still works everywhere.
"""

from __future__ import annotations

from enum import StrEnum

from gatehouse_gateway.auth import Principal


class Role(StrEnum):
    """Client roles of `gatehouse-web` (realm roles of the same name count too)."""

    GET_AUTHORS = "get-authors"
    CREATE_AUTHOR = "create-author"
    UPDATE_AUTHOR = "update-author"
    DELETE_AUTHOR = "delete-author"
    VIEW_AUDIT_LOGS = "view-audit-logs"
    ADMIN = "admin"


def authorize(principal: Principal, role: Role) -> bool:
    """Whether `principal` may do what `role` guards."""
    return role in principal.roles or Role.ADMIN in principal.roles


def rate_limit_tier(principal: Principal) -> str:
    """The ratelimit service's tier for `principal`'s requests."""
    return "admin" if Role.ADMIN in principal.roles else "default"
