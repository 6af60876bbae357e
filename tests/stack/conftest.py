"""Fixtures of the stack tests."""

from __future__ import annotations

import pytest

from tests.harness.stack import Stack


@pytest.fixture
def native_stack(stack: Stack) -> Stack:
    """The stack, which must be the native one of `make run` (its logs are files here)."""
    assert stack.native, "needs the native stack of make run"
    assert stack.state_dir is not None
    return stack
