"""Time for the whole simulator and cloud: a `Clock` is passed in, never read from `time` deep in the code.

`SystemClock` is real time, optionally sped up by a scale factor; `VirtualClock` only moves when a test (or a
scenario) calls `advance()`, so every time rule — pairing-code expiry, licence reminders, S-PIN lockout, command
TTL — can be exercised in well under a second.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """Where every component gets its time from."""

    def now(self) -> float:
        """Wall-clock time in seconds since the Unix epoch (what goes into `iat`, `exp`, `updated_at`)."""
        ...

    def monotonic(self) -> float:
        """A clock that never goes back, for measuring intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""
        ...


class SystemClock:
    """Real time. With `scale` > 1 simulated time runs faster than real time (a 60x run turns minutes into seconds)."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self.scale = scale
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        if self.scale == 1.0:
            return time.time()
        return self._wall0 + (time.monotonic() - self._mono0) * self.scale

    def monotonic(self) -> float:
        return time.monotonic() * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    def __repr__(self) -> str:
        return f"SystemClock(scale={self.scale})"


class VirtualClock:
    """A clock that moves only when told to. Sleepers wake, in deadline order, as `advance()` passes them."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), fut))
        await fut

    @property
    def pending_sleepers(self) -> int:
        """How many tasks are waiting on this clock (tests use it to know a loop has parked)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline is passed, in order, letting each one run."""
        if seconds < 0:
            raise ValueError("a virtual clock never goes back")
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now += deadline - self._mono
            self._mono = deadline
            fut.set_result(None)
            # Let the woken task (and what it schedules) run before moving on.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now += target - self._mono
        self._mono = target
        await asyncio.sleep(0)

    def set_time(self, wall: float) -> None:
        """Jump the wall clock (not the monotonic one), e.g. to model a car with a skewed clock."""
        self._now = float(wall)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:.3f}, sleepers={self.pending_sleepers})"


class SkewedClock:
    """Another clock seen through a constant offset: a car whose clock is `skew_s` seconds off."""

    def __init__(self, base: Clock, skew_s: float) -> None:
        self.base = base
        self.skew_s = skew_s

    def now(self) -> float:
        return self.base.now() + self.skew_s

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)

    def __repr__(self) -> str:
        return f"SkewedClock({self.base!r}, skew_s={self.skew_s})"


__all__ += ["SkewedClock"]
