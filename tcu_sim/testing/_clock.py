"""The virtual clock a sandbox's cloud and cars share, with hooks that let them catch up after each jump.

`VirtualClock.advance()` wakes every sleeper in deadline order, but a woken loop that then does real I/O (the
cloud's expiry job reads the registry in a thread) may still be working when the jump ends, and read the
earlier time. `SimClock.advance()` therefore runs its `after_advance` hooks once the jump is done: the cloud
registers its expiry job, so after `await clock.advance(120)` a command whose TTL passed is already `timed_out`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from tcu_sim.clock import VirtualClock

__all__ = ["DEFAULT_START", "SimClock"]

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the day fleet registration ages count back from

Hook = Callable[[], Awaitable[object]]


class SimClock(VirtualClock):
    """A `VirtualClock` whose `advance()` also lets the cloud apply its time rules (command expiry)."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        super().__init__(start)
        self._hooks: list[Hook] = []

    def after_advance(self, hook: Hook) -> Callable[[], None]:
        """Run `hook()` after every `advance()`; returns the function that removes it."""
        self._hooks.append(hook)

        def remove() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return remove

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in order, then run the after-advance hooks."""
        await super().advance(seconds)
        for hook in list(self._hooks):
            await hook()

    def isoformat(self) -> str:
        """The clock's wall time, e.g. `2026-01-01T00:01:30Z` (for messages)."""
        return dt.datetime.fromtimestamp(self.now(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def __repr__(self) -> str:
        return f"SimClock({self.isoformat()}, sleepers={self.pending_sleepers})"
