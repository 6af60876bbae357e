"""Fixtures for tests of the whole platform: the running stack, and the native one for
tests that read its files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The running platform (see tests/harness/stack.py for how it is reached)."""
    with running_stack() as running:
        yield running


@pytest.fixture
def native_stack(stack: Stack) -> Stack:
    """The stack, which must be the native one of `make run` (its logs are files here)."""
    assert stack.native, "needs the native stack of make run"
    assert stack.state_dir is not None
    return stack
