"""How a service's main coroutine runs: on uvloop, a cheaper event loop than asyncio's
under the many small awaits of an RPC, with what start-up allocated kept out of the
garbage collector's way."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import uvloop


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a fresh uvloop event loop.

    Modules, protobuf descriptors and settings loaded so far live as long as the
    process: `gc.freeze()` moves them out of the collected generations, so collections
    under load only walk the objects that requests allocate.
    """
    gc.freeze()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
