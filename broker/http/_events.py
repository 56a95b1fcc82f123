"""Each user's recent push events, for the HTTP API's Server-Sent Events stream (`/api/v1/events`).

The cloud's `Pusher` calls `UserEventLog.append` (a `PushListener`) with every push event meant for a user's
apps, at the place it pushes them over MQTT. Each event gets an id from one counter of this process; a stream
resumed with `Last-Event-ID` gets what the user's log still holds after it. The log is bounded twice: the newest
`per_user` events of a user, and the `users` users with the newest events; what falls out is counted, and a
stream resumed from before it is told so with a `gap` event.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass

from tcu_sim.protocol import PushEvent

__all__ = ["LoggedEvent", "UserEventLog"]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One push event with its stream id."""

    id: int
    event: PushEvent


class UserEventLog:
    """Bounded per-user logs of push events, and a way to wait for the next one."""

    def __init__(self, *, per_user: int = 256, users: int = 10_000) -> None:
        self.per_user = per_user
        self.users = users
        self._logs: OrderedDict[str, deque[LoggedEvent]] = OrderedDict()
        self._wakeups: dict[str, asyncio.Event] = {}
        self._lost: dict[str, int] = {}  # user -> the id of the newest of their events that fell out
        self._next_id = 1
        self.dropped = 0

    def __repr__(self) -> str:
        return f"UserEventLog(users={len(self._logs)}, last_id={self._next_id - 1}, dropped={self.dropped})"

    @property
    def last_id(self) -> int:
        """The id of the newest event logged (0 before the first)."""
        return self._next_id - 1

    def append(self, user_id: str, event: PushEvent) -> None:
        """Log an event for a user and wake their streams (the `Pusher` listener; never blocks)."""
        log = self._logs.get(user_id)
        if log is None:
            log = self._logs[user_id] = deque(maxlen=self.per_user)
            while len(self._logs) > self.users:
                gone_user, gone = self._logs.popitem(last=False)
                self.dropped += len(gone)
                self._lost.pop(gone_user, None)  # forgotten entirely: a stream resumed later starts afresh
        else:
            self._logs.move_to_end(user_id)
        if len(log) == log.maxlen:
            self.dropped += 1
            self._lost[user_id] = log[0].id
        log.append(LoggedEvent(self._next_id, event))
        self._next_id += 1
        wakeup = self._wakeups.pop(user_id, None)
        if wakeup is not None:
            wakeup.set()

    def after(self, user_id: str, last_id: int) -> tuple[list[LoggedEvent], bool]:
        """The user's events newer than `last_id`, and whether some after it are gone already."""
        log = self._logs.get(user_id)
        if not log:
            return [], last_id < self._lost.get(user_id, 0)
        newer = [e for e in log if e.id > last_id]
        return newer, last_id < self._lost.get(user_id, 0)

    async def wait(self, user_id: str, last_id: int, timeout: float) -> list[LoggedEvent]:
        """The user's events newer than `last_id`, waiting up to `timeout` seconds for one (empty on timeout)."""
        newer, _ = self.after(user_id, last_id)
        if newer:
            return newer
        wakeup = self._wakeups.setdefault(user_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await wakeup.wait()
        except TimeoutError:
            return []
        return self.after(user_id, last_id)[0]
