"""What the cloud did with each car message: applied, or refused and why — for scenario expectations (none
missing, none twice) and for proving that an attack changed nothing.

The cloud handler has no per-message hook, so `CloudObserver` wraps its car-message entry point
(`handler.cars.handle_batch` when the handler takes batches, else `handler.cars.handle`) and hands the handler
one message at a time, reading the handler's own counters before and after: what moved is that message's
outcome. That is exact as long as one worker applies car messages (`HandlerConfig(car_workers=1)`, as the
scenario cloud runs), and it slows nothing a scenario measures.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CloudObserver", "Handled", "token_claims"]

_KEPT = 200_000  # messages remembered; a scenario run is far smaller


def token_claims(token: bytes) -> dict[str, Any]:
    """The claims of a signed token, unverified (only to read `seq`/`body` of what was already judged)."""
    try:
        part = token.split(b".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))
        return claims if isinstance(claims, dict) else {}
    except (IndexError, ValueError):
        return {}


@dataclass(frozen=True, slots=True)
class Handled:
    """One car message the cloud handled."""

    vin: str
    kind: str
    """The topic kind: status, events, results, connection."""
    seq: int | None
    """The message's `seq` (None on the plain-text connection topic or when unreadable)."""
    applied: bool
    reason: str | None
    """The refusal reason when it was not applied."""
    payload: bytes


class CloudObserver:
    """Records every car message a `CloudHandler` handles (see the module docstring)."""

    def __init__(self, handler: Any) -> None:
        self.handled: list[Handled] = []
        self.applied: defaultdict[str, list[int]] = defaultdict(list)
        self.refused: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.by_payload: dict[bytes, Handled] = {}
        self._stats = handler.stats
        cars = handler.cars
        batch: Callable[[Sequence[Any]], Awaitable[None]] | None = getattr(cars, "handle_batch", None)
        if batch is not None:

            async def observed_batch(messages: Sequence[Any]) -> None:
                for message in messages:
                    await self._one(message.topic, message.payload, _single(batch, message))

            cars.handle_batch = observed_batch
        else:
            single: Callable[[Any, bytes], Awaitable[bool]] = cars.handle

            async def observed(topic: Any, payload: bytes) -> bool:
                return await self._one(topic, payload, lambda: single(topic, payload))

            cars.handle = observed

    def __repr__(self) -> str:
        applied = sum(1 for h in self.handled if h.applied)
        return f"CloudObserver(handled={len(self.handled)}, applied={applied})"

    async def _one(self, topic: Any, payload: bytes, run: Callable[[], Awaitable[Any]]) -> bool:
        kind = str(getattr(topic.kind, "value", topic.kind))
        refused_before = Counter(self._stats.refused)
        applied_before = self._stats.applied[kind]
        await run()
        applied = bool(self._stats.applied[kind] > applied_before)
        moved = [reason for reason, n in self._stats.refused.items() if n > refused_before.get(reason, 0)]
        reason = None if applied else (moved[0] if moved else None)
        vin = str(topic.key)
        seq = None if kind == "connection" else token_claims(payload).get("seq")
        handled = Handled(vin, kind, seq if isinstance(seq, int) else None, applied, reason, payload)
        if len(self.handled) < _KEPT:
            self.handled.append(handled)
            self.by_payload[payload] = handled
        if applied and handled.seq is not None:
            self.applied[vin].append(handled.seq)
        elif reason is not None:
            self.refused[vin][reason] += 1
        return applied


def _single(batch: Callable[[Sequence[Any]], Awaitable[None]], message: Any) -> Callable[[], Awaitable[None]]:
    """`batch` for this one message."""

    def run() -> Awaitable[None]:
        return batch([message])

    return run
