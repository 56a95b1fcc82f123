"""Links with a `ClientCertificate` share TLS contexts between handshakes; each car still presents its own
certificate, over the real Mosquitto (mutual TLS, ACLs keyed to the certificate's CN)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest

from broker.pki import FleetPKI
from tcu_sim.protocol import TopicKind, Topics, generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker
from tcu_sim.transport import BrokerAddress, ClientCertificate, LinkCallbacks, LinkPool, MqttLink

pytestmark = pytest.mark.mosquitto

TOPICS = Topics()


class Events:
    """What one link reported."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.reasons: list[str] = []

    def callbacks(self) -> LinkCallbacks:
        def on_disconnected(reason: str) -> None:
            self.reasons.append(reason)
            self.disconnected.set()

        return LinkCallbacks(
            on_connected=lambda _present: self.connected.set(),
            on_disconnected=on_disconnected,
            on_message=lambda _topic, _payload: None,
            on_published=lambda _mid: None,
        )


def identity(pki: FleetPKI, vin: str) -> ClientCertificate:
    paths = pki.ensure_car(vin).paths
    return ClientCertificate(pki.ca_cert_path, paths.cert, paths.key)


async def test_cars_sharing_one_handshake_context_each_publish_as_themselves(mosquitto: MosquittoBroker) -> None:
    rng = random.Random(71)
    vins = [generate_vin(rng) for _ in range(4)]
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    # One handshake thread: every car's certificate goes through the same shared context, one after another.
    async with (
        LinkPool(max_concurrent_handshakes=1) as pool,
        mosquitto.client("cloud", identifier="shared-tls-observer") as cloud,
    ):
        await cloud.subscribe(TOPICS.all_tcu(TopicKind.CONNECTION), qos=1)
        async with Inbox(cloud, name="cloud") as inbox:
            links: list[tuple[MqttLink, Events]] = []
            for vin in vins:
                events = Events()
                link = pool.link(vin, events.callbacks(), tls=identity(mosquitto.pki, vin))
                links.append((link, events))
            for link, _events in links:
                await link.connect(address)
            for _link, events in links:
                await asyncio.wait_for(events.connected.wait(), 10)
            # The ACL lets a car write only below its own VIN, which the broker takes from the certificate's
            # CN: a car that presented another car's certificate would have this publish dropped.
            for link, _events in links:
                assert link.publish(TOPICS.connection(link.client_id), b"online", retain=True) is not None

            def all_seen(_messages: object) -> bool:
                return all(inbox.received(TOPICS.connection(vin)) for vin in vins)

            await inbox.wait_until(all_seen, timeout=10)
            for link, _events in links:
                link.disconnect()


async def test_a_certificate_of_another_ca_is_refused_after_a_valid_car_used_the_same_context(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    rng = random.Random(72)
    good_vin, rogue_vin = generate_vin(rng), generate_vin(rng)
    rogue_pki = FleetPKI(tmp_path / "rogue-pki")
    rogue_pki.ensure_ca()
    rogue_paths = rogue_pki.ensure_car(rogue_vin).paths
    # Trusts the real broker, but presents a certificate the fleet CA never signed.
    rogue = ClientCertificate(mosquitto.pki.ca_cert_path, rogue_paths.cert, rogue_paths.key)
    address = BrokerAddress(mosquitto.host, mosquitto.port, connect_timeout_s=5.0)
    async with LinkPool(max_concurrent_handshakes=1) as pool:
        good_events, rogue_events = Events(), Events()
        good = pool.link(good_vin, good_events.callbacks(), tls=identity(mosquitto.pki, good_vin))
        await good.connect(address)
        await asyncio.wait_for(good_events.connected.wait(), 10)
        # The same thread's context held the good car's certificate a moment ago: it must not be presented.
        bad = pool.link(rogue_vin, rogue_events.callbacks(), tls=rogue)
        with contextlib.suppress(OSError):  # TLS 1.2 refuses in the handshake, TLS 1.3 right after it
            await bad.connect(address)
        if not rogue_events.disconnected.is_set():
            await asyncio.wait_for(rogue_events.disconnected.wait(), 10)
        assert not rogue_events.connected.is_set()
        assert not bad.connected
        assert good.connected
        good.disconnect()

