"""Reconnect timing: capped exponential backoff with full jitter, so a fleet never reconnects in waves."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt `attempt` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempt, 30)))
        return rng.uniform(0.0, ceiling)
