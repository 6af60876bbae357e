"""Fixtures of the fuzz suites: the running platform and a token with every role."""

from __future__ import annotations

import pytest

from tests.harness.stack import Stack


@pytest.fixture(scope="session")
def admin_token(stack: Stack) -> str:
    """An access token of the realm's `admin` user (every role: full access)."""
    return stack.token("admin")
