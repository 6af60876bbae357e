"""WebSocket subscriptions that recover on the running stack (docs/websocket.md, Recovery
by offset): a subscriber whose socket was closed reconnects, on the other gateway replica
when there are two, with the offset of the last broadcast it got and receives exactly the
events it missed, in order; an offset older than the retained history gets the
history-gap answer. The same across a gateway replica restart and a Redis restart:
tests/chaos/test_change_events.py (those stop shared processes).
"""

from __future__ import annotations

import uuid

from tests.e2e.conftest import Tokens
from tests.e2e.recovery import (
    assert_recovers,
    authors_service,
    create,
    other_replica,
    seen_offset,
    subscriber,
)
from tests.harness.stack import Stack


async def test_a_closed_socket_recovers_exactly_what_it_missed(
    native_stack: Stack, tokens: Tokens
) -> None:
    prefix = f"e2e-recovery-{uuid.uuid4().hex[:8]}"
    token = await tokens.get("viewer")
    async with authors_service(native_stack) as stub:
        offset = await seen_offset(0, token, stub, f"{prefix} seen")
        # The socket is closed; three changes happen meanwhile.
        names = [f"{prefix} missed {n}" for n in range(3)]
        for name in names:
            await create(stub, name)
    await assert_recovers(other_replica(native_stack, 0), token, offset, names)


async def test_an_offset_older_than_the_history_gets_the_gap_answer(
    native_stack: Stack, tokens: Tokens
) -> None:
    async with subscriber(0, await tokens.get("viewer"), "1-0") as (_, answer):
        assert answer["recovered"] is False
        assert answer["offset"] != "1-0"
