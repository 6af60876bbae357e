"""The SQL schema as SQLAlchemy Core tables (the migrations create it; queries use it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, MetaData, String, Table, func

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
