"""Session fixture for tests of the whole platform: the running stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The running platform (see tests/harness/stack.py for how it is reached)."""
    with running_stack() as running:
        yield running
