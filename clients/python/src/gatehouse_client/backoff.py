"""Jittered exponential backoff for reconnects and retries.

"Full jitter": the n-th wait is drawn uniformly from `[0, min(maximum, initial * 2**n)]`,
so that many clients dropped at once (a gateway restart) come back spread out rather
than all together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The waits before successive attempts; `reset()` after a success."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")

    def ceiling(self) -> float:
        """The longest the next wait may be."""
        return float(min(self.maximum, self.initial * self.multiplier**self.attempt))

    def next_delay(self) -> float:
        """The wait before the next attempt (and count this attempt)."""
        delay = self.rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from `initial` (after a connection succeeded)."""
        self.attempt = 0
