"""A cloud-identity observer of `tcu/+/connection`: when did each car's `online` arrive.

It reconnects by itself when the broker goes away, so the same observer times a cold start and the reconnect
storm after a broker restart. `reset()` forgets what it saw (call it once the broker is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType

import aiomqtt
import structlog

from broker.mosquitto import MosquittoBroker
from tcu_sim.protocol import ProtocolError, TopicKind, Topics

__all__ = ["ConnectionObserver"]

log = structlog.get_logger("tcu_sim.bench")

_RETRY_S = 0.1


class ConnectionObserver:
    """Counts cars whose latest connection message is `online` (an async context manager owning one task)."""

    def __init__(self, broker: MosquittoBroker, *, client_id: str = "bench-observer", topics: Topics | None = None):
        self.broker = broker
        self.client_id = client_id
        self.topics = topics or Topics()
        self.connected = asyncio.Event()
        self.connects = 0
        self._online: dict[str, float] = {}  # VIN -> time.monotonic() of its first `online` since reset()
        self._wanted: set[str] = set()
        self._wanted_online = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected.is_set() else "disconnected"
        return f"ConnectionObserver({state}, online={len(self._online)}, wanted={len(self._wanted)})"

    async def __aenter__(self) -> ConnectionObserver:
        self._task = asyncio.create_task(self._run(), name="bench.observer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def watch(self, vins: Iterable[str]) -> None:
        """The cars `wait_all_online` waits for."""
        self._wanted = set(vins)
        self._wanted_online = sum(1 for vin in self._wanted if vin in self._online)

    def reset(self) -> None:
        """Forget every `online` seen so far (after the broker went down)."""
        self._online.clear()
        self._wanted_online = 0

    @property
    def online_count(self) -> int:
        """Watched cars currently online."""
        return self._wanted_online

    def online_times(self) -> list[float]:
        """When each watched car came online (time.monotonic()), sorted."""
        return sorted(t for vin, t in self._online.items() if vin in self._wanted)

    def curve(self, since: float, step_s: float = 5.0) -> list[int]:
        """How many watched cars came online in each `step_s` after `since` (where a connect phase slows)."""
        buckets = Counter(int((t - since) // step_s) for t in self.online_times() if t >= since)
        return [buckets.get(i, 0) for i in range(max(buckets, default=-1) + 1)]

    def peak_rate(self, since: float) -> float:
        """The most cars that came online within one second, after `since`."""
        buckets = Counter(int(t - since) for t in self.online_times() if t >= since)
        return float(max(buckets.values(), default=0))

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the observer is connected and subscribed."""
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def wait_all_online(self, timeout: float) -> float:
        """Wait until every watched car is online; returns when the last one came (time.monotonic()).
        Raises TimeoutError naming how many are missing."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._wanted_online >= len(self._wanted))
        except TimeoutError:
            raise TimeoutError(
                f"{len(self._wanted) - self._wanted_online} of {len(self._wanted)} cars not online after {timeout:g} s"
            ) from None
        return max(self.online_times(), default=time.monotonic())

    async def _run(self) -> None:
        topic_filter = self.topics.all_tcu(TopicKind.CONNECTION)
        while True:
            try:
                async with self.broker.client(
                    self.client_id,  # its own certificate (`bench-observer`): the client id is the CN
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=True,
                    timeout=5,
                ) as client:
                    await client.subscribe(topic_filter, qos=1)
                    self.connects += 1
                    self.connected.set()
                    async for message in client.messages:
                        await self._handle(str(message.topic), message.payload)
            except (aiomqtt.MqttError, OSError) as exc:
                self.connected.clear()
                log.debug("bench observer disconnected", error=str(exc))
            await asyncio.sleep(_RETRY_S)  # the broker is down or restarting: try again shortly

    async def _handle(self, topic: str, payload: object) -> None:
        try:
            vin = self.topics.parse(topic).key
        except ProtocolError:
            return
        online = payload in (b"online", "online")
        async with self._changed:
            if online and vin not in self._online:
                self._online[vin] = time.monotonic()
                if vin in self._wanted:
                    self._wanted_online += 1
            elif not online and vin in self._online:
                del self._online[vin]
                if vin in self._wanted:
                    self._wanted_online -= 1
            self._changed.notify_all()
