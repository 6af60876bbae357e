"""Alembic migrations of the authors database (`python -m gatehouse_authors migrate`)."""
