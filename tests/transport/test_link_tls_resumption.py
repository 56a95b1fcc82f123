"""Reconnects resume the car's TLS session (issue 11, P4), over the real Mosquitto: the second handshake is a
resumed one, and the broker still knows the car by the certificate of the session — the car publishes on its own
topics and its publishes on another car's topics are dropped by the ACL, as after a full handshake. A session is
never offered by another car; a revoked car cannot resume (the broker's reload refuses its session and the full
handshake checks the CRL); after a broker restart the kept session is refused and a full handshake follows."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from test_link_shared_tls import Events, identity

from tcu_sim.protocol import TopicKind, Topics, generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker
from tcu_sim.transport import BrokerAddress, LinkPool, MqttLink

pytestmark = pytest.mark.mosquitto

TOPICS = Topics()


async def test_a_reconnect_resumes_the_session_and_the_acl_still_knows_the_car(mosquitto: MosquittoBroker) -> None:
    rng = random.Random(73)
    mine, other = generate_vin(rng), generate_vin(rng)
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    async with (
        LinkPool(max_concurrent_handshakes=4) as pool,
        mosquitto.client("cloud", identifier="resumption-observer") as cloud,
    ):
        await cloud.subscribe(TOPICS.all_tcu(TopicKind.CONNECTION), qos=1)
        async with Inbox(cloud, name="cloud") as inbox:
            first = Events()
            link = pool.link(mine, first.callbacks(), tls=identity(mosquitto.pki, mine))
            await link.connect(address)
            await asyncio.wait_for(first.connected.wait(), 10)
            assert not link.tls_resumed  # nothing to resume yet
            # A round trip on the connection, so that the broker's session ticket has been read.
            assert link.publish(TOPICS.connection(mine), b"first", retain=False) is not None
            await inbox.wait_until(lambda _m: bool(inbox.received(TOPICS.connection(mine))), timeout=10)
            link.disconnect()
            await asyncio.wait_for(first.disconnected.wait(), 10)

            first.connected.clear()
            await link.connect(address)
            await asyncio.wait_for(first.connected.wait(), 10)
            assert link.tls_resumed

            # Refused by the ACL (another car's topic), then allowed (its own): once the second is seen, the
            # first would have been seen before it had the broker let it through.
            assert link.publish(TOPICS.connection(other), b"forged", retain=False) is not None
            assert link.publish(TOPICS.connection(mine), b"resumed", retain=False) is not None

            def resumed_seen(_messages: object) -> bool:
                return any(m.payload == b"resumed" for m in inbox.received(TOPICS.connection(mine)))

            await inbox.wait_until(resumed_seen, timeout=10)
            assert inbox.received(TOPICS.connection(other)) == []
            link.disconnect()


async def test_a_car_never_offers_another_cars_session(mosquitto: MosquittoBroker) -> None:
    rng = random.Random(74)
    vins = [generate_vin(rng) for _ in range(2)]
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    async with LinkPool(max_concurrent_handshakes=1) as pool:
        events = [Events(), Events()]
        links = [
            pool.link(vin, ev.callbacks(), tls=identity(mosquitto.pki, vin))
            for vin, ev in zip(vins, events, strict=True)
        ]
        await links[0].connect(address)
        await asyncio.wait_for(events[0].connected.wait(), 10)
        links[0].disconnect()
        await asyncio.wait_for(events[0].disconnected.wait(), 10)
        # The second car's first handshake follows the first car's in the same context: a full one.
        await links[1].connect(address)
        await asyncio.wait_for(events[1].connected.wait(), 10)
        assert not links[1].tls_resumed
        links[1].disconnect()


async def _connected_once(
    pool: LinkPool, mosquitto: MosquittoBroker, vin: str, address: BrokerAddress
) -> tuple[MqttLink, Events]:
    """A link of `vin` that connected, made a round trip (so its session ticket was read) and disconnected."""
    events = Events()
    link = pool.link(vin, events.callbacks(), tls=identity(mosquitto.pki, vin))
    await link.connect(address)
    await asyncio.wait_for(events.connected.wait(), 10)
    link.subscribe([TOPICS.commands(vin)])
    link.disconnect()
    await asyncio.wait_for(events.disconnected.wait(), 10)
    events.connected.clear()
    events.disconnected.clear()
    return link, events


async def test_a_revoked_car_cannot_resume_its_session(mosquitto: MosquittoBroker) -> None:
    vin = generate_vin(random.Random(75))
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    async with LinkPool(max_concurrent_handshakes=1) as pool:
        link, events = await _connected_once(pool, mosquitto, vin, address)
        await link.connect(address)  # the session is resumable: this reconnect resumes it
        await asyncio.wait_for(events.connected.wait(), 10)
        assert link.tls_resumed
        link.disconnect()
        await asyncio.wait_for(events.disconnected.wait(), 10)
        events.connected.clear()
        events.disconnected.clear()
        await mosquitto.revoke(vin)  # the broker reloads: the car's next handshake must check the CRL again
        with contextlib.suppress(OSError):  # TLS 1.2 refuses in the handshake, TLS 1.3 right after it
            await link.connect(address)
        if not events.disconnected.is_set():
            await asyncio.wait_for(events.disconnected.wait(), 10)
        assert not events.connected.is_set()
        assert not link.connected


async def test_after_a_broker_restart_a_car_connects_with_a_full_handshake(mosquitto: MosquittoBroker) -> None:
    vin = generate_vin(random.Random(76))
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    async with LinkPool(max_concurrent_handshakes=1) as pool:
        link, events = await _connected_once(pool, mosquitto, vin, address)
        await mosquitto.restart()  # new process, new ticket keys: the kept session is refused, not an error
        await link.connect(address)
        await asyncio.wait_for(events.connected.wait(), 10)
        assert not link.tls_resumed
        link.disconnect()
