"""T10, client-id takeover (SPEC §7), on a real Mosquitto and on the embedded broker.

Car A holds a valid certificate and connects with car B's VIN as its client id, asking for a persistent session,
while B is connected and the cloud sends B commands. The broker forces the client id to the certificate's CN, so
the attempt gets A's own session (it receives what was queued for A, nothing of B's), B is never disconnected
(its one connection, which does not reconnect, still publishes afterwards) and every command sent to B during the
attempts arrives at B exactly once.

Denials are proven the matrix's way (test_mosquitto_acl_matrix.py): after each command to B the cloud sends the
attacker a marker on A's own topic; once the marker is in, a command for B that was going to reach the attacker
would have come before it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest

from broker.embedded import EmbeddedBroker
from broker.pki import FleetPKI
from tcu_sim.protocol import generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker, free_ports

_rng = random.Random("T10 takeover")
CAR_A, CAR_B = generate_vin(_rng), generate_vin(_rng)
ROUNDS = 20
WAIT = 5.0
V311 = aiomqtt.ProtocolVersion.V311

Connect = Callable[..., aiomqtt.Client]
"""`connect(identity, client_id, **aiomqtt options)`: a client presenting `identity`'s certificate."""


@dataclass
class Figures:
    """What one T10 run counted (written to docs/reliability.md)."""

    attempts: int = 0
    refused: int = 0
    commands_sent: int = 0
    delivered_to_b: int = 0
    applied_twice: int = 0
    lost: int = 0
    cross_car: int = 0
    queued_for_a_seen: int = 0

    def __str__(self) -> str:
        return (
            f"{self.attempts} takeover attempts ({self.refused} refused), {self.commands_sent} commands to B: "
            f"{self.delivered_to_b} delivered, {self.lost} lost, {self.applied_twice} twice, "
            f"{self.cross_car} cross-car deliveries; the attempt received {self.queued_for_a_seen} message "
            "queued in A's own session"
        )


async def takeover(connect: Connect) -> Figures:
    """Run the T10 rounds against one broker; B must stay on its first connection throughout."""
    figures = Figures()
    commands_b, commands_a = f"tcu/{CAR_B}/commands", f"tcu/{CAR_A}/commands"
    # A's persistent session, with one command queued in it while A is away.
    async with connect(CAR_A, CAR_A, clean_session=False) as car_a:
        await car_a.subscribe(commands_a, qos=1)
    async with connect("cloud", "cloud") as cloud, Inbox(cloud, name="cloud") as cloud_inbox:
        await cloud.subscribe(f"tcu/{CAR_B}/status", qos=1)
        await cloud.publish(commands_a, b"queued for A", qos=1)
        async with connect(CAR_B, CAR_B, clean_session=False) as car_b, Inbox(car_b, name=CAR_B) as b_inbox:
            await car_b.subscribe(commands_b, qos=1)
            for n in range(ROUNDS):
                figures.attempts += 1
                try:
                    async with connect(CAR_A, CAR_B, clean_session=False) as attempt, Inbox(
                        attempt, name="attempt"
                    ) as attempt_inbox:
                        await attempt.subscribe(commands_b, qos=1)  # granted or not, B's commands must not come
                        await cloud.publish(commands_b, f"command {n}".encode(), qos=1)
                        figures.commands_sent += 1
                        await b_inbox.wait_for(commands_b, f"command {n}".encode(), timeout=WAIT)
                        await cloud.publish(commands_a, f"marker {n}".encode(), qos=1)
                        await attempt_inbox.wait_for(commands_a, f"marker {n}".encode(), timeout=WAIT)
                        figures.cross_car += len(attempt_inbox.received(commands_b))
                        figures.queued_for_a_seen += len(attempt_inbox.received(commands_a, b"queued for A"))
                except aiomqtt.MqttError:
                    figures.refused += 1  # refused is as good as isolated; B must not notice either way
            # B is still on its first connection: it can publish, and gets one more command.
            await car_b.publish(f"tcu/{CAR_B}/status", b"still connected", qos=1)
            await cloud_inbox.wait_for(f"tcu/{CAR_B}/status", b"still connected", timeout=WAIT)
            await cloud.publish(commands_b, b"last", qos=1)
            await b_inbox.wait_for(commands_b, b"last", timeout=WAIT)
            counts = Counter(m.payload for m in b_inbox.received(commands_b) if m.payload != b"last")
    expected = {f"command {n}".encode() for n in range(figures.commands_sent)}
    figures.delivered_to_b = sum(1 for payload in counts if payload in expected)
    figures.lost = len(expected) - figures.delivered_to_b
    figures.applied_twice = sum(count - 1 for count in counts.values())
    print(f"T10: {figures}")  # the figures of docs/reliability.md (run with -s)
    return figures


def assert_isolated(figures: Figures) -> None:
    assert figures.attempts == ROUNDS
    assert figures.commands_sent + figures.refused == ROUNDS
    assert figures.lost == 0
    assert figures.applied_twice == 0
    assert figures.cross_car == 0
    assert figures.delivered_to_b == figures.commands_sent


@pytest.mark.mosquitto
async def test_a_certificate_cannot_take_another_cars_session_on_mosquitto(mosquitto: MosquittoBroker) -> None:
    def connect(identity: str, client_id: str, **kwargs: Any) -> aiomqtt.Client:
        return mosquitto.client(identity, identifier=client_id, protocol=V311, **kwargs)

    mark = mosquitto.log_mark()
    figures = await takeover(connect)
    assert_isolated(figures)
    assert figures.refused == 0  # Mosquitto forces the id rather than refusing
    assert figures.queued_for_a_seen == 1  # the first attempt got A's own session, with what waited in it
    log = mosquitto.log_lines()[mark:]
    assert not [line for line in log if "already connected" in line and CAR_B in line], log
    attempts = [line for line in log if "New client connected" in line and f"u'{CAR_A}'" in line]
    assert len(attempts) == ROUNDS + 1  # A's own first connection, then every attempt
    assert all(f" as {CAR_A} " in line for line in attempts), attempts  # not "as <B's VIN>"


@pytest.fixture
async def embedded(mqtt_pki: FleetPKI) -> AsyncIterator[EmbeddedBroker]:
    port, app_port = free_ports("127.0.0.1", 2)
    async with EmbeddedBroker("127.0.0.1", port, pki=mqtt_pki, app_port=app_port) as broker:
        yield broker


async def test_a_certificate_cannot_take_another_cars_session_on_the_embedded_broker(
    embedded: EmbeddedBroker,
) -> None:
    assert embedded.pki is not None
    pki = embedded.pki

    def connect(identity: str, client_id: str, **kwargs: Any) -> aiomqtt.Client:
        pki.ensure(identity)
        return aiomqtt.Client(
            embedded.host, embedded.port, identifier=client_id, tls_context=pki.client_ssl_context(identity),
            protocol=V311, timeout=WAIT, **kwargs,
        )

    figures = await takeover(connect)
    assert_isolated(figures)
    assert figures.queued_for_a_seen + figures.refused >= 1


@pytest.mark.mosquitto
async def test_two_cloud_processes_run_side_by_side(mosquitto: MosquittoBroker) -> None:
    # `cloud` and `cloud-2`: two certificates, two client ids; neither replaces the other's connection.
    mark = mosquitto.log_mark()
    async with (
        mosquitto.client("cloud") as first,
        Inbox(first, name="cloud") as first_inbox,
        mosquitto.client("cloud-2") as second,
        Inbox(second, name="cloud-2") as second_inbox,
        mosquitto.client(CAR_A) as car,
    ):
        await first.subscribe(f"tcu/{CAR_A}/status", qos=1)
        await second.subscribe(f"tcu/{CAR_A}/status", qos=1)
        await car.publish(f"tcu/{CAR_A}/status", b"seen by both", qos=1)
        await first_inbox.wait_for(f"tcu/{CAR_A}/status", b"seen by both", timeout=WAIT)
        await second_inbox.wait_for(f"tcu/{CAR_A}/status", b"seen by both", timeout=WAIT)
        await first.publish(f"tcu/{CAR_A}/commands", b"from cloud", qos=1)  # both still connected
        await second.publish(f"tcu/{CAR_A}/commands", b"from cloud-2", qos=1)
    assert not [line for line in mosquitto.log_lines()[mark:] if "already connected" in line]
