"""The cloud's MQTT connection, kept up across broker restarts.

`MqttLink.run()` connects, subscribes to the handler's filters and hands every message to a sink; when the
connection is lost it reconnects with capped exponential backoff and full jitter (a fleet of cloud processes
must not reconnect in waves either). `publish()` waits — with a timeout — for a connection, and returns when
the broker acknowledged a QoS 1 message (PUBACK).

What the cloud acknowledges, and when (`HandlerConfig.ack_after_apply`, on by default): every message reaches
the sink with a `Delivery`; its PUBACK goes out once the handler *settles* it (a car message applied — its
registry transaction committed — or refused; an app request answered), and PUBACKs leave in the order the
messages came, as MQTT requires (5.0 §4.6), so a message settled early waits for the ones before it. Until
then the broker holds the message for the cloud's session: if the process dies or the connection drops, the
broker delivers it again after the reconnect (with a kept session, `session_expiry_s` > 0), and the registry's
seq windows drop what had been applied already. MQTT 5's Receive Maximum (`receive_maximum`) bounds how many
unacknowledged messages the broker sends at once, which also bounds the client's queue.

Backoff waits are network time, not simulated time: they use `asyncio.sleep`, never the injected clock, so a
virtual clock standing still in a test does not stop the cloud from reconnecting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tcu_sim._net import SOCKET_OPTIONS

from ._config import HandlerConfig
from ._stats import HandlerStats

__all__ = ["AckLedger", "Delivery", "MqttLink", "PublishFailed", "Subscription"]

log = structlog.get_logger("broker.handler.mqtt")


class Delivery:
    """One received message's place in its connection's acknowledgement order: `settle()` when done with it."""

    __slots__ = ("_ledger", "mid", "qos", "settled")

    def __init__(self, ledger: AckLedger | None, mid: int, qos: int) -> None:
        self._ledger = ledger
        self.mid = mid
        self.qos = qos
        self.settled = ledger is None

    def settle(self) -> None:
        """The cloud is done with the message: acknowledge it once every earlier one is settled too."""
        if not self.settled:
            self.settled = True
            if self._ledger is not None:
                self._ledger.flush()

    def __repr__(self) -> str:
        return f"Delivery(mid={self.mid}, qos={self.qos}, settled={self.settled})"


#: What a message that needs no acknowledgement carries (QoS 0, acknowledged on receipt, or not from MQTT).
SETTLED = Delivery(None, 0, 0)


class AckLedger:
    """The PUBACKs of one connection: sent in the order the messages came, each once its message is settled."""

    def __init__(self, client: paho.Client | None, stats: HandlerStats) -> None:
        self._client = client
        self._stats = stats
        self._pending: collections.deque[Delivery] = collections.deque()

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"AckLedger({state}, unacknowledged={len(self._pending)})"

    @property
    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._pending)

    def track(self, message: aiomqtt.Message) -> Delivery:
        """The delivery of a message just received (already settled when it needs no PUBACK from us)."""
        if self._client is None or message.qos == 0:
            return SETTLED
        delivery = Delivery(self, message.mid, message.qos)
        self._pending.append(delivery)
        return delivery

    def flush(self) -> None:
        """Acknowledge the settled messages at the head of the order."""
        pending = self._pending
        while pending and pending[0].settled:
            delivery = pending.popleft()
            if self._client is not None:
                self._client.ack(delivery.mid, delivery.qos)
                self._stats.acked += 1

    def close(self) -> None:
        """The connection is gone: acknowledge nothing more (the broker delivers it all again on the next one)."""
        self._client = None
        self._pending.clear()


Sink = Callable[[aiomqtt.Message, Delivery], Awaitable[None]]


class PublishFailed(Exception):
    """A message could not be handed to the broker in time."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter the cloud subscribes to (already `$share/...` when shared)."""

    topic_filter: str
    qos: int = 1


class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
    """The MQTT client's incoming queue: bounded, and every message it must drop is counted. The link reads it
    directly while it holds messages (aiomqtt's iterator makes a task per message)."""

    stats: ClassVar[HandlerStats | None] = None
    created: ClassVar[list[_CountingQueue]]

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.created.append(self)

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            if self.stats is not None:
                self.stats.dropped_incoming += 1
            raise  # aiomqtt logs the drop


def _granted(result: Any) -> bool:
    """Whether a SUBACK granted every filter (v5 reason codes below 0x80, v3 granted QoS below 128)."""
    codes = list(result)
    return all((c.value if hasattr(c, "value") else int(c)) < 0x80 for c in codes)


class MqttLink:
    """One MQTT connection of the cloud: subscribe, receive, publish, reconnect."""

    def __init__(
        self,
        config: HandlerConfig,
        *,
        host: str,
        port: int,
        subscriptions: Sequence[Subscription],
        sink: Sink,
        stats: HandlerStats,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        rng: random.Random | None = None,
        on_connection: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        #: Told `(connected, error)` each time the connection comes up (subscribed) or is lost.
        self._on_connection = on_connection
        self.port = port
        self._subscriptions = tuple(subscriptions)
        self._sink = sink
        self._stats = stats
        self._tls = tls_context
        self._username = username
        self._password = password
        self._rng = rng or random.Random()
        self._client: aiomqtt.Client | None = None
        self._ledger: AckLedger | None = None
        self._queue: _CountingQueue | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()  # set when the current connection is lost; a new one per connection
        self._changed = asyncio.Condition()
        self._attempt = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connected.is_set() else "disconnected"
        return f"MqttLink({self.host}:{self.port}, client_id={self.config.client_id!r}, {state})"

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Return once connected and subscribed; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def wait_connects(self, count: int, timeout: float) -> None:
        """Return once connected and subscribed for the `count`-th time (1: the first connection) and still
        connected; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._stats.connects >= count and self._connected.is_set())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the connection loop ---------------------------------------------------------------------------------
    @property
    def unacknowledged(self) -> int:
        """Messages of the current connection received and not yet acknowledged."""
        return 0 if self._ledger is None else self._ledger.unacknowledged

    def _new_client(self) -> aiomqtt.Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
            if cfg.session_expiry_s > 0:
                properties.SessionExpiryInterval = cfg.session_expiry_s
            if cfg.ack_after_apply:
                properties.ReceiveMaximum = cfg.receive_maximum
        created: list[_CountingQueue] = []
        queue_type = type("_Queue", (_CountingQueue,), {"stats": self._stats, "created": created})
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=cfg.client_id,
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else cfg.session_expiry_s == 0,
            # A new client per attempt: "first only" means a clean start every time; a kept session never.
            clean_start=False if v5 and cfg.session_expiry_s > 0 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            queue_type=queue_type,
            max_queued_incoming_messages=cfg.incoming_queue_limit,
            socket_options=SOCKET_OPTIONS,
        )
        self._queue = created[0] if created else None
        if cfg.ack_after_apply:
            # aiomqtt has no switch for it; paho's own: PUBACKs go out only when `AckLedger` says so.
            client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Stay connected until cancelled."""
        while True:
            client = self._new_client()
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    await client.__aenter__()
            except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
                await self._backoff(f"connect: {exc or type(exc).__name__}")
                continue
            try:
                await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._connected.clear()
                self._lost.set()
                self._client = None
                self._close_ledger()
                self._stats.disconnects += 1
                if self._on_connection is not None:
                    self._on_connection(False, str(exc) or type(exc).__name__)
                await self._notify()
                # The client is already disconnected; leaving its context only tidies up.
                await self._close(client)
                await self._backoff(f"connection lost: {exc}")
            except BaseException:
                self._connected.clear()
                self._lost.set()
                self._client = None
                self._close_ledger()
                await asyncio.shield(self._close(client, disconnect=True))
                raise

    def _close_ledger(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._lost = asyncio.Event()
        manual = self.config.ack_after_apply
        # `_client`: the paho client aiomqtt wraps (it has no manual-ack API of its own).
        ledger = self._ledger = AckLedger(client._client if manual else None, self._stats)
        # Messages are taken (and settled) while the subscriptions are still being made: a broker may deliver
        # retained messages and wait for their PUBACKs before it grants the subscription (amqtt does).
        subscribing = asyncio.create_task(self._subscribe(client), name="cloud.mqtt.subscribe")
        try:
            queue, messages = self._queue, client.messages
            while True:
                # Straight from the queue while it holds messages; aiomqtt's iterator (which also notices a lost
                # connection) only when it is empty.
                if queue is not None and not queue.empty():
                    message = queue.get_nowait()
                else:
                    message = await anext(messages)
                await self._sink(message, ledger.track(message))
        except aiomqtt.MqttError:
            if subscribing.done() and not subscribing.cancelled() and subscribing.exception() is not None:
                raise aiomqtt.MqttError(str(subscribing.exception())) from None
            raise
        finally:
            if not subscribing.done():
                subscribing.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError, TimeoutError):
                await subscribing

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe to every filter; then the link counts as connected. A refusal or a timeout drops the
        connection (the run loop reconnects)."""
        v5 = self.config.protocol == "5"
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                for sub in self._subscriptions:
                    if v5:
                        # Retained messages only for a new subscription: after a reconnect with a kept session
                        # the broker has queued what changed, and every car's retained status again would only
                        # come back as duplicates.
                        options = SubscribeOptions(
                            qos=sub.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
                        )
                        granted = await client.subscribe(sub.topic_filter, options=options)
                    else:
                        granted = await client.subscribe(sub.topic_filter, qos=sub.qos)
                    if not _granted(granted):
                        raise aiomqtt.MqttError(f"subscription to {sub.topic_filter!r} refused by the broker")
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self.last_error = f"subscribe: {exc or type(exc).__name__}"
            client._client.disconnect()  # paho's: the message loop notices it
            raise aiomqtt.MqttError(self.last_error) from None
        self._attempt = 0
        self.last_error = None
        self._stats.connects += 1
        self._connected.set()
        if self._on_connection is not None:
            self._on_connection(True, None)
        await self._notify()
        log.info("cloud.connected", broker=f"{self.host}:{self.port}", client_id=self.config.client_id,
                 subscriptions=[s.topic_filter for s in self._subscriptions])

    def reconnect(self, reason: str) -> None:
        """Drop the connection without acknowledging what is still unsettled, and connect again: with a kept
        session the broker delivers those messages again (e.g. after the registry was unavailable too long)."""
        client = self._client
        if client is None:
            return
        log.warning("cloud.reconnecting", reason=reason, unacknowledged=self.unacknowledged)
        self._close_ledger()
        # paho's disconnect, not aiomqtt's (which waits for the run loop): the run loop notices it and reconnects.
        client._client.disconnect()

    async def _close(self, client: aiomqtt.Client, *, disconnect: bool = False) -> None:
        try:
            async with asyncio.timeout(2.0):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError):
            pass  # the connection is gone either way

    async def _backoff(self, reason: str) -> None:
        self.last_error = reason
        cap = min(self.config.reconnect_cap_s, self.config.reconnect_base_s * 2 ** min(self._attempt, 30))
        delay = self._rng.uniform(0, cap)
        self._attempt += 1
        log.warning("cloud.disconnected", reason=reason, retry_in_s=round(delay, 3), attempt=self._attempt)
        await asyncio.sleep(delay)

    # -- publishing ------------------------------------------------------------------------------------------
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float | None = None
    ) -> None:
        """Publish and, for QoS 1, wait for the broker's PUBACK. Waits for a connection first; `PublishFailed`
        when the message is not acknowledged within `timeout` (default: the configured publish timeout)."""
        wait = self.config.publish_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self._connected.wait()
                    client = self._client
                    if client is None:  # pragma: no cover - cleared only together with the event
                        await asyncio.sleep(0)
                        continue
                    try:
                        # A PUBACK that was due on a connection that is gone never comes (a clean session
                        # forgets the message): publish again on the next connection instead of waiting it out.
                        if await _unless_lost(client.publish(topic, payload, qos=qos, retain=retain, timeout=wait),
                                              self._lost):
                            return
                    except aiomqtt.MqttError:
                        # Lost the connection under our feet: wait for the next one (within the timeout).
                        if self._client is client:
                            await asyncio.sleep(0.05)
        except TimeoutError:
            raise PublishFailed(f"no PUBACK for {topic} within {wait:g} s") from None


async def _unless_lost(operation: Awaitable[None], lost: asyncio.Event) -> bool:
    """Run `operation`: True once it is done, False if `lost` is set first (it is then cancelled)."""
    task = asyncio.ensure_future(operation)
    waiter = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        task.result()  # an MqttError is the caller's to handle
        return True
    return False
