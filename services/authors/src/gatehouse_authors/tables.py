"""The SQL schema as SQLAlchemy Core tables (the migrations create it; queries use it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)

NAME_MAX = 255

metadata = MetaData()

authors = Table(
    "authors",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", String(NAME_MAX), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", BigInteger, nullable=False, server_default="1"),
)

# One row per committed change until the relay has published it (migration 0003).
author_outbox = Table(
    "author_outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("kind", SmallInteger, nullable=False),
    Column("author_id", BigInteger, nullable=False),
    Column("name", String(NAME_MAX), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("request_id", Text, nullable=False, server_default=""),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
