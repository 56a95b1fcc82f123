"""broker.embedded in secured mode: what amqtt can enforce of the Mosquitto set-up, and the amqtt flaw it patches.

amqtt speaks MQTT 3.1.1 only, and refuses a subscription outside the client's rights with SUBACK 0x80 (unlike
Mosquitto 2.0, which grants it and filters per message), so denied subscriptions are asserted on the SUBACK here.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from broker.embedded import EmbeddedBroker
from broker.pki import FleetPKI
from tcu_sim.protocol import generate_vin
from tcu_sim.testing import ConnectOutcome, Inbox, free_ports, probe_connect

_rng = random.Random("embedded")
CAR, OTHER, REVOKED_LIVE, REVOKED_EARLY = (generate_vin(_rng) for _ in range(4))
V311 = aiomqtt.ProtocolVersion.V311
WAIT = 5.0
APPS = {"app-1": "password-1", "app-2": "password-2"}


@pytest.fixture
async def secured(mqtt_pki: FleetPKI) -> AsyncIterator[EmbeddedBroker]:
    mqtt_pki.issue_car(REVOKED_EARLY)
    mqtt_pki.revoke(REVOKED_EARLY)  # on the CRL the TLS context loads at start
    port, app_port = free_ports("127.0.0.1", 2)
    async with EmbeddedBroker("127.0.0.1", port, pki=mqtt_pki, app_port=app_port, app_users=APPS) as broker:
        yield broker


def device(broker: EmbeddedBroker, identity: str, **kwargs: Any) -> aiomqtt.Client:
    assert broker.pki is not None
    broker.pki.ensure(identity)
    kwargs.setdefault("identifier", identity)
    return aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.pki.client_ssl_context(identity),
        protocol=V311,
        **kwargs,
    )


def app(broker: EmbeddedBroker, username: str, password: str | None = None) -> aiomqtt.Client:
    assert broker.pki is not None
    assert broker.app_port is not None
    return aiomqtt.Client(
        broker.host,
        broker.app_port,
        identifier=username,
        username=username,
        password=password if password is not None else APPS[username],
        tls_context=broker.pki.client_ssl_context(None),
        protocol=V311,
    )


async def probe(broker: EmbeddedBroker, identity: str | None, client_id: str, **kwargs: Any) -> ConnectOutcome:
    assert broker.pki is not None
    if identity is not None:
        broker.pki.ensure(identity)
    context = broker.pki.client_ssl_context(identity)
    return await probe_connect(broker.host, broker.port, ssl_context=context, client_id=client_id, **kwargs)


def failed(codes: object) -> bool:
    """True when a SUBACK refused the (single) subscription."""
    assert isinstance(codes, list | tuple)
    (code,) = codes
    return bool(getattr(code, "is_failure", code == 0x80))


async def test_cars_and_cloud_talk_with_certificate_identities(secured: EmbeddedBroker) -> None:
    async with (
        device(secured, "cloud") as cloud,
        Inbox(cloud, name="cloud") as cloud_inbox,
        device(secured, CAR) as car,
        Inbox(car, name=CAR) as car_inbox,
    ):
        assert not failed(await cloud.subscribe("tcu/+/status", qos=1))
        assert not failed(await car.subscribe(f"tcu/{CAR}/commands", qos=1))
        await car.publish(f"tcu/{CAR}/status", b"status", qos=1)
        await cloud.publish(f"tcu/{CAR}/commands", b"command", qos=1)
        await cloud_inbox.wait_for(f"tcu/{CAR}/status", b"status", timeout=WAIT)
        await car_inbox.wait_for(f"tcu/{CAR}/commands", b"command", timeout=WAIT)


async def test_the_certificate_not_the_username_decides(secured: EmbeddedBroker) -> None:
    async with device(secured, CAR, username="cloud", password="x") as car:
        assert failed(await car.subscribe("tcu/+/status", qos=1))  # still the car, not the cloud


@pytest.mark.parametrize(
    "topic_filter",
    [
        f"tcu/{OTHER}/commands",
        f"tcu/{OTHER}/status",
        "tcu/+/commands",
        f"tcu/{CAR}/#",
        "#",
        "app/#",
        f"tcu/{CAR}/status",
    ],
)
async def test_a_car_is_refused_other_subscriptions(secured: EmbeddedBroker, topic_filter: str) -> None:
    async with device(secured, CAR) as car:
        assert failed(await car.subscribe(topic_filter, qos=1))


async def test_shared_subscriptions_are_refused_not_silently_dead(secured: EmbeddedBroker) -> None:
    async with device(secured, "cloud") as cloud:
        assert failed(await cloud.subscribe("$share/cloud/tcu/+/status", qos=1))


async def test_a_car_cannot_publish_for_another(secured: EmbeddedBroker) -> None:
    async with device(secured, "cloud") as cloud, Inbox(cloud, name="cloud") as inbox, device(secured, CAR) as car:
        await cloud.subscribe("tcu/+/status", qos=1)
        await car.publish(f"tcu/{OTHER}/status", b"forbidden", qos=1)
        await car.publish(f"tcu/{CAR}/status", b"marker", qos=1)
        await inbox.wait_for(f"tcu/{CAR}/status", b"marker", timeout=WAIT)
        assert inbox.topics() == [f"tcu/{CAR}/status"]


async def test_no_retained_message_of_another_car_on_connect(secured: EmbeddedBroker) -> None:
    # Unpatched amqtt sends a connecting client the retained messages of every filter any client subscribed to.
    async with device(secured, "cloud") as cloud:
        await cloud.subscribe("tcu/+/status", qos=1)
        async with device(secured, OTHER) as other:
            await other.publish(f"tcu/{OTHER}/status", b"forbidden", qos=1, retain=True)
        async with device(secured, "operator") as operator:
            await operator.publish(f"sim/{CAR}/control", b"marker", qos=1, retain=True)
        async with device(secured, CAR) as car, Inbox(car, name=CAR) as inbox:
            await car.subscribe(f"sim/{CAR}/control", qos=1)
            await inbox.wait_for(f"sim/{CAR}/control", b"marker", timeout=WAIT)
            assert inbox.topics() == [f"sim/{CAR}/control"]


async def test_connect_refusals(secured: EmbeddedBroker) -> None:
    assert (await probe(secured, CAR, CAR)).accepted
    assert (await probe(secured, CAR, OTHER)).accepted  # as CAR: the client id is forced to the CN (SPEC §7)
    assert (await probe(secured, CAR, CAR, will=(f"tcu/{OTHER}/connection", b"offline"))).return_code == 5
    assert (await probe(secured, CAR, CAR, will=(f"tcu/{CAR}/connection", b"offline"))).accepted
    no_certificate = await probe(secured, None, "anyone")
    assert not no_certificate.accepted
    assert no_certificate.return_code is None  # refused in the TLS handshake
    early = await probe(secured, REVOKED_EARLY, REVOKED_EARLY)
    assert not early.accepted
    assert early.return_code is None


async def test_a_revocation_takes_effect_without_a_restart(secured: EmbeddedBroker) -> None:
    assert secured.pki is not None
    secured.pki.issue_car(REVOKED_LIVE)
    assert (await probe(secured, REVOKED_LIVE, REVOKED_LIVE)).accepted
    secured.pki.revoke(REVOKED_LIVE)
    assert (await probe(secured, REVOKED_LIVE, REVOKED_LIVE)).return_code == 5


async def test_apps_log_in_and_reach_only_their_topics(secured: EmbeddedBroker) -> None:
    async with (
        device(secured, "cloud") as cloud,
        Inbox(cloud, name="cloud") as cloud_inbox,
        app(secured, "app-1") as first,
        Inbox(first, name="app-1") as first_inbox,
    ):
        await cloud.subscribe("app/+/requests", qos=1)
        assert not failed(await first.subscribe("app/app-1/responses", qos=1))
        assert failed(await first.subscribe("app/app-2/responses", qos=1))
        assert failed(await first.subscribe("app/+/responses", qos=1))
        await first.publish("app/app-2/requests", b"forbidden", qos=1)
        await first.publish("app/app-1/requests", b"request", qos=1)
        await cloud_inbox.wait_for("app/app-1/requests", b"request", timeout=WAIT)
        assert cloud_inbox.topics() == ["app/app-1/requests"]
        await cloud.publish("app/app-1/responses", b"response", qos=1)
        await first_inbox.wait_for("app/app-1/responses", b"response", timeout=WAIT)


async def test_app_login_refusals(secured: EmbeddedBroker) -> None:
    assert secured.pki is not None
    assert secured.app_port is not None
    context = secured.pki.client_ssl_context(None)

    async def login(username: str | None, password: str | None, client_id: str) -> ConnectOutcome:
        assert secured.app_port is not None
        return await probe_connect(
            secured.host,
            secured.app_port,
            ssl_context=context,
            client_id=client_id,
            username=username,
            password=password,
        )

    assert (await login("app-1", "password-1", "app-1")).accepted
    assert (await login("app-1", "wrong", "app-1")).return_code == 5
    assert (await login("app-1", "password-1", "app-2")).return_code == 5  # client id = username
    assert (await login("app-9", "password-1", "app-9")).return_code == 5
    assert (await login(None, None, "anonymous")).return_code == 5


def test_an_app_listener_needs_the_secured_mode() -> None:
    with pytest.raises(ValueError, match="secured"):
        EmbeddedBroker(port=1, app_port=2)
