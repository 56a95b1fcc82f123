"""What a car could not send yet: kept in order while it is offline, sent when it is back."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

__all__ = ["Outbox", "OutboxEntry"]

log = structlog.get_logger("tcu_sim.transport.outbox")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One signed message waiting to be published."""

    topic: str
    payload: bytes
    retain: bool
    seq: int


class Outbox:
    """A bounded FIFO of signed messages. When full, the oldest entry is dropped, logged and counted."""

    __slots__ = ("_entries", "dropped", "limit")

    def __init__(self, limit: int = 1000) -> None:
        if limit < 1:
            raise ValueError("outbox limit must be at least 1")
        self.limit = limit
        # A list, not a deque: the outbox is empty almost always, and an empty deque keeps a 0.7 KiB block per
        # car; popping the head of a list of at most `limit` entries is cheap next to signing one.
        self._entries: list[OutboxEntry] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Outbox(len={len(self._entries)}, limit={self.limit}, dropped={self.dropped})"

    def put(self, entry: OutboxEntry) -> None:
        if len(self._entries) >= self.limit:
            lost = self._entries.pop(0)
            self.dropped += 1
            log.warning("outbox full, oldest message dropped", topic=lost.topic, seq=lost.seq, limit=self.limit)
        self._entries.append(entry)

    def peek(self) -> OutboxEntry | None:
        return self._entries[0] if self._entries else None

    def pop(self) -> OutboxEntry:
        return self._entries.pop(0)
