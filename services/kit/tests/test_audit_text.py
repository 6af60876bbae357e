"""Storable text: what PostgreSQL refuses (NUL) and protobuf cannot carry (lone
surrogates) is escaped, and every field is bounded."""

from __future__ import annotations

import pytest

from gatehouse_kit.audit_text import (
    FIELD_LIMITS,
    MAX_ROLES,
    storable_field,
    storable_roles,
    storable_text,
)
from gatehouse_protos.audit.v1 import audit_pb2


@pytest.mark.parametrize("text", ["", "/authors/12", "Ada Lovelace", "Zoë ✓ 漢字", "a\\u0000b"])
def test_ordinary_text_is_returned_as_it_is(text: str) -> None:
    assert storable_text(text, 100) is text


def test_nul_and_lone_surrogates_are_escaped() -> None:
    assert storable_text("/authors\x00", 100) == "/authors\\u0000"
    assert storable_text("a\ud800b\udcff", 100) == "a\\ud800b\\udcff"
    # Bytes decoded with surrogateescape (invalid UTF-8) come out as their escapes.
    raw = b"caf\xe9\xff".decode("utf-8", "surrogateescape")
    assert storable_text(raw, 100) == "caf\\udce9\\udcff"
    # What protobuf and PostgreSQL refused before is accepted now.
    event = audit_pb2.AuditEvent(resource=storable_text("\x00\ud800", 100))
    assert b"\x00" not in event.SerializeToString()


@pytest.mark.parametrize("limit", [1, 5, 20, 64])
def test_long_text_keeps_its_start_and_says_how_long_it_was(limit: int) -> None:
    text = storable_text("x" * 500 + "\x00", limit)
    assert len(text) <= limit
    if limit >= 20:
        assert text.startswith("x")
        assert text.endswith("…[506 chars]")


def test_fields_and_roles_have_their_bounds() -> None:
    assert len(storable_field("resource", "/a" * 5000)) == FIELD_LIMITS["resource"]
    roles = storable_roles([f"role-{n}\x00" for n in range(200)])
    assert len(roles) == MAX_ROLES
    assert roles[0] == "role-0\\u0000"
