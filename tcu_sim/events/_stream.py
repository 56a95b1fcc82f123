"""`EventStream`: one place where cloud and fleet report what happens, and any number of readers follow it.

Publishing never waits and never fails: each subscriber has a bounded buffer, and an event that finds it full
is dropped for that subscriber alone and counted (`Subscription.dropped`, `EventStream.dropped`) — a slow or
stalled reader never slows the cloud or the fleet. A subscription reads on the event loop that created it;
`publish` may be called from any thread (an event from another thread is handed over with
`call_soon_threadsafe`).

    async with stream.subscribe(CommandChanged) as commands:
        event = await commands.wait_for(lambda e: e.command_id == cid and e.state == "succeeded", timeout=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

import structlog

from ._events import Event

__all__ = ["EventStream", "Subscription"]

log = structlog.get_logger("tcu_sim.events")

E = TypeVar("E", bound=Event)

DEFAULT_BUFFER = 10_000


class EventStream:
    """Typed events from publishers to bounded subscriptions (see the module docstring)."""

    def __init__(self, name: str = "events") -> None:
        self.name = name
        self.published = 0
        self._subscriptions: tuple[Subscription[Event], ...] = ()
        self._lock = threading.Lock()
        self._dropped_closed = 0

    def __repr__(self) -> str:
        return (
            f"EventStream({self.name!r}, subscribers={len(self._subscriptions)}, published={self.published},"
            f" dropped={self.dropped})"
        )

    @property
    def dropped(self) -> int:
        """Events dropped because a subscriber's buffer was full, over every subscriber there ever was."""
        return self._dropped_closed + sum(s.dropped for s in self._subscriptions)

    @property
    def subscribers(self) -> int:
        """Subscriptions open now."""
        return len(self._subscriptions)

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscription that wants its type; never blocks."""
        self.published += 1
        for subscription in self._subscriptions:
            subscription.offer(event)

    def subscribe(self, *kinds: type[E], buffer: int = DEFAULT_BUFFER, name: str = "") -> Subscription[E]:
        """A new subscription to the events of the given types (every event when none is given), holding up to
        `buffer` unread events. Call on the event loop that will read it; close it (or use `with`) when done."""
        if buffer < 1:
            raise ValueError("a subscription needs a buffer of at least one event")
        subscription: Subscription[E] = Subscription(self, kinds, buffer, name or f"subscriber-{id(self) % 10_000}")
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)  # type: ignore[arg-type]  # E is an Event
        return subscription

    def _remove(self, subscription: Subscription[E]) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
                self._dropped_closed += subscription.dropped


class Subscription(Generic[E]):
    """What one reader of an `EventStream` has not read yet (bounded); an async iterator of events."""

    def __init__(self, stream: EventStream, kinds: tuple[type[E], ...], buffer: int, name: str) -> None:
        self.name = name
        self.buffer = buffer
        self.kinds = kinds
        self.received = 0
        self.dropped = 0
        self._stream = stream
        self._items: deque[E] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # read with get_nowait() only
        self._thread = threading.get_ident()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        kinds = ",".join(k.kind for k in self.kinds) or "*"
        return (
            f"Subscription({self.name!r}, {state}, kinds={kinds}, pending={len(self._items)}, received={self.received},"
            f" dropped={self.dropped})"
        )

    @property
    def pending(self) -> int:
        """Events waiting to be read."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the publisher's side --------------------------------------------------------------------------------
    def offer(self, event: Event) -> None:
        """Take `event` if it is of a wanted type (called by the stream, from any thread)."""
        if self._closed or (self.kinds and not isinstance(event, self.kinds)):
            return
        if threading.get_ident() != self._thread and self._loop is not None:
            # A closed loop (RuntimeError): its reader is gone, nobody will read this subscription again.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._take, event)
            return
        self._take(event)

    def _take(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) >= self.buffer:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("events.dropped", subscriber=self.name, dropped=self.dropped, buffer=self.buffer)
            return
        self._items.append(event)  # type: ignore[arg-type]  # filtered by isinstance above
        self.received += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the reader's side -----------------------------------------------------------------------------------
    def get_nowait(self) -> E | None:
        """The oldest unread event, or None."""
        return self._items.popleft() if self._items else None

    def drain(self) -> list[E]:
        """Every unread event, oldest first."""
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self, timeout: float | None = None) -> E:
        """The next event; TimeoutError after `timeout` seconds (None: wait as long as it takes)."""
        async with asyncio.timeout(timeout):
            while not self._items:
                if self._closed:
                    raise EOFError(f"{self.name}: the subscription is closed")
                loop = asyncio.get_running_loop()
                if self._loop is None:
                    self._loop = loop
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        return self._items.popleft()

    async def wait_for(self, predicate: Callable[[E], bool], timeout: float) -> E:
        """Read events until one satisfies `predicate`, and return it (those before it are consumed);
        TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.get()
                if predicate(event):
                    return event

    def __aiter__(self) -> Subscription[E]:
        return self

    async def __anext__(self) -> E:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; a reader waiting in `get` gets EOFError (an `async for` ends)."""
        if self._closed:
            return
        self._closed = True
        self._stream._remove(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
