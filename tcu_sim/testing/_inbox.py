"""Record what an MQTT client receives, so a test can await one message and then assert others never came.

The pattern for "X is NOT delivered", without sleeping: send X, then send a marker that must be delivered on the
same path after X, await the marker with a bounded timeout, and only then assert that X is absent — Mosquitto
delivers a publisher's messages in order, so X would have arrived before the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import aiomqtt

__all__ = ["Inbox"]


class Inbox:
    """Every message an aiomqtt client receives, in arrival order (an async context manager owning one task)."""

    def __init__(self, client: aiomqtt.Client, *, name: str = "inbox") -> None:
        self.client = client
        self.name = name
        self.messages: list[aiomqtt.Message] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def __aenter__(self) -> Inbox:
        self._task = asyncio.create_task(self._pump(), name=f"inbox[{self.name}].pump")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _pump(self) -> None:
        try:
            async for message in self.client.messages:
                async with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()
        except aiomqtt.MqttError as exc:  # the client disconnected: wake waiters so they fail, not hang
            async with self._changed:
                self._error = exc
                self._changed.notify_all()

    def received(self, topic: str | None = None, payload: bytes | None = None) -> list[aiomqtt.Message]:
        """The messages received so far on `topic` (any when None) with `payload` (any when None)."""
        return [m for m in self.messages if _matches(m, topic, payload)]

    def topics(self) -> list[str]:
        """The topic of every message received so far, in order."""
        return [m.topic.value for m in self.messages]

    async def wait_for(self, topic: str, payload: bytes | None = None, *, timeout: float = 5.0) -> aiomqtt.Message:
        """The first message on `topic` (with `payload`, when given), waiting up to `timeout` seconds for it."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                found = self.received(topic, payload)
                if found:
                    return found[0]
                if self._error is not None:
                    raise AssertionError(f"{self.name}: client disconnected while waiting for {topic}") from (
                        self._error
                    )
                await self._changed.wait()

    async def wait_until(
        self, predicate: Callable[[list[aiomqtt.Message]], bool], *, timeout: float = 5.0
    ) -> list[aiomqtt.Message]:
        """Wait (up to `timeout` seconds) until `predicate(messages so far)` holds; return the messages."""
        async with asyncio.timeout(timeout), self._changed:
            while not predicate(self.messages):
                if self._error is not None:
                    raise AssertionError(f"{self.name}: client disconnected while waiting") from self._error
                await self._changed.wait()
            return list(self.messages)

    def __repr__(self) -> str:
        return f"Inbox({self.name!r}, messages={len(self.messages)})"


def _matches(message: aiomqtt.Message, topic: str | None, payload: bytes | None) -> bool:
    if topic is not None and message.topic.value != topic:
        return False
    return payload is None or message.payload == payload
