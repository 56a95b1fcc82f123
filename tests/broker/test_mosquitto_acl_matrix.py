"""The permission matrix, on a real Mosquitto with the generated configuration (SPEC §2.1, §7).

How a denial is proven without sleeping: the forbidden message is sent first, then a permitted marker that must
travel the same way after it; the observer awaits the marker (bounded), and only then asserts that the forbidden
message never arrived. Mosquitto handles one PUBLISH completely (queues it to every subscriber) before it
acknowledges it, so a message acknowledged before the marker was sent would have been delivered before it.

Mosquitto 2.0 grants every SUBSCRIBE (SUBACK 0x00-0x02 even for a filter the ACL does not allow) and checks each
message on delivery instead; a denied PUBLISH is dropped (MQTT 5: PUBACK 0x87). So denials are asserted on what
arrives, not on reason codes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiomqtt
import pytest

from broker.mosquitto import AclPolicy, Grant, GrantAccess
from tcu_sim.protocol import generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker

pytestmark = pytest.mark.mosquitto

_rng = random.Random(20261124)
CARS = [generate_vin(_rng) for _ in range(3)]
CAR_WRITES = ("status", "events", "results", "connection")
V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311
WAIT = 5.0
FORBIDDEN = b"forbidden"

# A test-only identity that may read everything, to observe that a denied message reached nobody. It changes
# nothing of the rules under test: it is one more `user` block in the device ACL.
AUDITOR = "auditor"
AUDITED = AclPolicy(named={AUDITOR: (Grant(GrantAccess.READ, "#"),)})


@asynccontextmanager
async def listening(client: aiomqtt.Client, *filters: str, name: str) -> AsyncIterator[Inbox]:
    """Connect `client`, subscribe to `filters` (QoS 1) and record what it receives."""
    async with client, Inbox(client, name=name) as inbox:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        yield inbox


def forbidden_in(inbox: Inbox) -> list[str]:
    """Topics of every forbidden message the inbox received."""
    return [m.topic.value for m in inbox.messages if isinstance(m.payload, bytes) and m.payload.startswith(FORBIDDEN)]


def more_than(count: int) -> Callable[[list[aiomqtt.Message]], bool]:
    """A predicate for `Inbox.wait_until`: more than `count` messages."""
    return lambda messages: len(messages) > count


async def until_total(inboxes: list[Inbox], count: int) -> None:
    """Wait until the inboxes together hold `count` messages."""
    async with asyncio.timeout(WAIT):
        while sum(len(inbox.messages) for inbox in inboxes) < count:
            waiters = [
                asyncio.create_task(inbox.wait_until(more_than(len(inbox.messages)), timeout=WAIT)) for inbox in inboxes
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)


def others(vin: str) -> list[str]:
    return [car for car in CARS if car != vin]


@pytest.fixture
async def audited(mosquitto_factory: Callable[..., MosquittoBroker]) -> AsyncIterator[MosquittoBroker]:
    async with mosquitto_factory(policy=AUDITED, app_users=("app-1", "app-2")) as broker:
        yield broker


# --- what is allowed ---------------------------------------------------------------------------------------------


async def test_each_car_uses_its_own_topics(mosquitto: MosquittoBroker) -> None:
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(
            listening(mosquitto.client("cloud"), *(f"tcu/+/{kind}" for kind in CAR_WRITES), name="cloud")
        )
        operator = await stack.enter_async_context(mosquitto.client("operator"))
        cars = {
            vin: await stack.enter_async_context(
                listening(mosquitto.client(vin), f"tcu/{vin}/commands", f"sim/{vin}/control", name=vin)
            )
            for vin in CARS
        }
        for vin in CARS:
            for kind in CAR_WRITES:
                await cars[vin].client.publish(f"tcu/{vin}/{kind}", f"{vin} {kind}".encode(), qos=1)
            await cloud.client.publish(f"tcu/{vin}/commands", f"command for {vin}".encode(), qos=1)
            await operator.publish(f"sim/{vin}/control", f"control for {vin}".encode(), qos=1)

        for vin in CARS:
            for kind in CAR_WRITES:
                await cloud.wait_for(f"tcu/{vin}/{kind}", f"{vin} {kind}".encode(), timeout=WAIT)
            await cars[vin].wait_for(f"tcu/{vin}/commands", f"command for {vin}".encode(), timeout=WAIT)
            await cars[vin].wait_for(f"sim/{vin}/control", f"control for {vin}".encode(), timeout=WAIT)
            assert len(cars[vin].messages) == 2, cars[vin].topics()


async def test_cloud_shares_car_topics_between_instances(mosquitto: MosquittoBroker) -> None:
    shared = "$share/cloud/tcu/+/status"
    async with (
        listening(mosquitto.client("cloud"), shared, name="cloud") as first,
        listening(mosquitto.client("cloud-2"), shared, name="cloud-2") as second,
        mosquitto.client(CARS[0]) as car,
    ):
        for n in range(20):
            await car.publish(f"tcu/{CARS[0]}/status", str(n).encode(), qos=1)
        await until_total([first, second], 20)
        payloads = sorted(int(m.payload) for m in first.messages + second.messages if isinstance(m.payload, bytes))
        assert payloads == list(range(20))  # every status once, split between the instances
        assert first.messages
        assert second.messages


async def test_apps_and_cloud_talk(mosquitto: MosquittoBroker) -> None:
    async with (
        listening(mosquitto.client("cloud"), "app/+/requests", name="cloud") as cloud,
        listening(mosquitto.app_client("app-1"), "app/app-1/responses", "app/app-1/events", name="app-1") as app,
    ):
        await app.client.publish("app/app-1/requests", b"request", qos=1)
        await cloud.wait_for("app/app-1/requests", b"request", timeout=WAIT)
        await cloud.client.publish("app/app-1/responses", b"response", qos=1)
        await cloud.client.publish("app/app-1/events", b"event", qos=1)
        await app.wait_for("app/app-1/responses", b"response", timeout=WAIT)
        await app.wait_for("app/app-1/events", b"event", timeout=WAIT)


async def test_operator_sees_connections_only(mosquitto: MosquittoBroker) -> None:
    vin = CARS[0]
    async with (
        listening(mosquitto.client("operator"), "tcu/+/connection", "tcu/+/status", "#", name="operator") as op,
        mosquitto.client(vin) as car,
    ):
        await car.publish(f"tcu/{vin}/status", FORBIDDEN, qos=1)
        await car.publish(f"tcu/{vin}/events", FORBIDDEN, qos=1)
        await car.publish(f"tcu/{vin}/connection", b"online", qos=1)
        await op.wait_for(f"tcu/{vin}/connection", b"online", timeout=WAIT)
        assert forbidden_in(op) == []


# --- publishing where one may not ----------------------------------------------------------------------------------


def car_forbidden_publishes(vin: str) -> list[str]:
    topics = [f"tcu/{other}/{kind}" for other in others(vin) for kind in (*CAR_WRITES, "commands")]
    topics += [f"sim/{other}/control" for other in others(vin)]
    topics += [f"tcu/{vin}/commands", f"sim/{vin}/control"]  # its own inbound topics: the cloud's and operator's
    topics += ["app/app-1/requests", "app/app-1/responses", "app/app-1/events", f"app/{vin}/requests"]
    topics += [f"tcu/{vin}/status/extra", f"tcu/{vin}", "tcu", f"x/tcu/{vin}/status", f"tcu/{vin}/unknown"]
    return topics


async def _assert_publishes_dropped(
    broker: MosquittoBroker,
    auditor: Inbox,
    client: aiomqtt.Client,
    forbidden: list[str],
    marker_topic: str,
) -> None:
    marker = f"marker after {len(forbidden)}".encode() + marker_topic.encode()
    async with client:
        for number, topic in enumerate(forbidden):
            await client.publish(topic, FORBIDDEN + topic.encode(), qos=1, retain=number % 2 == 0)
        await client.publish(marker_topic, marker, qos=1)
    await auditor.wait_for(marker_topic, marker, timeout=WAIT)
    assert forbidden_in(auditor) == []


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_cars_cannot_publish_outside_their_topics(
    audited: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    async with listening(audited.client(AUDITOR), "#", name=AUDITOR) as auditor:
        for vin in CARS:
            client = audited.client(vin, protocol=protocol)
            await _assert_publishes_dropped(audited, auditor, client, car_forbidden_publishes(vin), f"tcu/{vin}/status")

    # None of the forbidden messages was retained either: a new subscriber gets only the retained marker. The
    # second subscription re-sends that marker after every retained message of the first, closing the check.
    marker_topic = f"tcu/{CARS[0]}/status"
    async with audited.client(CARS[0]) as car:
        await car.publish(marker_topic, b"retained marker", qos=1, retain=True)
    async with listening(audited.client(AUDITOR, identifier="auditor-2"), "#", marker_topic, name="late") as late:
        await late.wait_until(lambda ms: len([m for m in ms if m.topic.value == marker_topic]) >= 2, timeout=WAIT)
        assert forbidden_in(late) == []
        assert {m.payload for m in late.messages} == {b"retained marker"}


async def test_services_cannot_publish_outside_their_rights(audited: MosquittoBroker) -> None:
    vin = CARS[0]
    async with listening(audited.client(AUDITOR), "#", name=AUDITOR) as auditor:
        # The cloud cannot speak for a car or for the operator.
        cloud_forbidden = [f"tcu/{vin}/{kind}" for kind in CAR_WRITES] + [f"sim/{vin}/control", "app/app-1/requests"]
        await _assert_publishes_dropped(
            audited, auditor, audited.client("cloud"), cloud_forbidden, f"tcu/{vin}/commands"
        )
        # The operator controls the simulator only.
        operator_forbidden = [f"tcu/{vin}/commands", f"tcu/{vin}/status", "app/app-1/responses", "app/app-1/requests"]
        await _assert_publishes_dropped(
            audited, auditor, audited.client("operator"), operator_forbidden, f"sim/{vin}/control"
        )
        # An app writes its own requests only, whatever client id it asks for.
        app_forbidden = ["app/app-2/requests", "app/app-1/responses", "app/app-1/events", f"tcu/{vin}/commands"]
        app_forbidden += [f"sim/{vin}/control", f"tcu/{vin}/status"]
        await _assert_publishes_dropped(
            audited, auditor, audited.app_client("app-1", identifier="app-2"), app_forbidden, "app/app-1/requests"
        )


async def test_every_cloud_and_operator_identity_has_its_roles_rights_only(audited: MosquittoBroker) -> None:
    # T11: one certificate per cloud process (`cloud-2` ...) and per operator tool (`operator-2` ...), each
    # with the rights of its role and no more; a name outside the pools (`cloud-9`, `cloud-p3`) has none.
    vin = CARS[0]
    async with listening(audited.client(AUDITOR), "#", name=AUDITOR) as auditor:
        cloud_forbidden = [f"tcu/{vin}/{kind}" for kind in CAR_WRITES] + [f"sim/{vin}/control", "app/app-1/requests"]
        for cloud in ("cloud-2", "cloud-8"):
            await _assert_publishes_dropped(
                audited, auditor, audited.client(cloud), cloud_forbidden, f"tcu/{vin}/commands"
            )
        operator_forbidden = [f"tcu/{vin}/commands", f"tcu/{vin}/status", "app/app-1/responses"]
        for operator in ("operator-2", "operator-8"):
            await _assert_publishes_dropped(
                audited, auditor, audited.client(operator), operator_forbidden, f"sim/{vin}/control"
            )
        for outsider in ("cloud-9", "cloud-p3", "operator-9"):
            # Its only "right" is the inert car pattern on its own name, used here as the marker.
            await _assert_publishes_dropped(
                audited, auditor, audited.client(outsider), [*cloud_forbidden, f"tcu/{vin}/commands",
                f"sim/{vin}/control"], f"tcu/{outsider}/status"
            )
    async with (
        listening(
            audited.client("cloud-9"), "tcu/+/status", "tcu/cloud-9/commands", name="cloud-9"
        ) as outsider_inbox,
        listening(audited.client("cloud-2"), "tcu/+/status", name="cloud-2") as cloud_inbox,
        audited.client(vin) as car,
    ):
        await car.publish(f"tcu/{vin}/status", FORBIDDEN, qos=1)
        await cloud_inbox.wait_for(f"tcu/{vin}/status", FORBIDDEN, timeout=WAIT)  # cloud-2 reads the cars
        await cloud_inbox.client.publish("tcu/cloud-9/commands", b"marker", qos=1)  # the outsider's inert topic
        await outsider_inbox.wait_for("tcu/cloud-9/commands", b"marker", timeout=WAIT)
        assert forbidden_in(outsider_inbox) == []


# --- reading what one may not ----------------------------------------------------------------------------------


def car_forbidden_filters(vin: str) -> list[str]:
    filters = [f"tcu/{other}/{kind}" for other in others(vin) for kind in (*CAR_WRITES, "commands")]
    filters += [f"sim/{other}/control" for other in others(vin)]
    filters += [f"tcu/{vin}/status", "tcu/+/status", "tcu/+/commands", "sim/+/control", "tcu/#", "sim/#"]
    filters += [
        "app/#",
        "app/+/responses",
        "#",
        "+/+/+",
        "$share/g/tcu/+/commands",
        f"$share/g/tcu/{others(vin)[0]}/commands",
    ]
    return filters


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_cars_cannot_read_other_topics(mosquitto: MosquittoBroker, protocol: aiomqtt.ProtocolVersion) -> None:
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(mosquitto.client("cloud"))
        operator = await stack.enter_async_context(mosquitto.client("operator"))
        app = await stack.enter_async_context(mosquitto.app_client("app-1"))
        for vin in CARS:
            async with listening(
                mosquitto.client(vin, protocol=protocol), f"tcu/{vin}/commands", *car_forbidden_filters(vin), name=vin
            ) as snooper:
                # Every kind of message a car must not see, each from someone allowed to send it.
                for other in others(vin):
                    async with mosquitto.client(other) as other_car:
                        for kind in CAR_WRITES:
                            await other_car.publish(f"tcu/{other}/{kind}", FORBIDDEN, qos=1)
                    await cloud.publish(f"tcu/{other}/commands", FORBIDDEN, qos=1)
                    await operator.publish(f"sim/{other}/control", FORBIDDEN, qos=1)
                await snooper.client.publish(f"tcu/{vin}/status", FORBIDDEN, qos=1)  # not even its own status
                await cloud.publish("app/app-1/responses", FORBIDDEN, qos=1)
                await cloud.publish("app/app-1/events", FORBIDDEN, qos=1)
                await app.publish("app/app-1/requests", FORBIDDEN, qos=1)

                await cloud.publish(f"tcu/{vin}/commands", b"marker", qos=1)
                await snooper.wait_for(f"tcu/{vin}/commands", b"marker", timeout=WAIT)
                assert forbidden_in(snooper) == []
                assert all(m.payload == b"marker" for m in snooper.messages), snooper.topics()


async def test_cars_get_no_retained_message_of_another_car(mosquitto: MosquittoBroker) -> None:
    victim, snoop = CARS[0], CARS[1]
    async with mosquitto.client(victim) as car, mosquitto.client("operator") as operator:
        await car.publish(f"tcu/{victim}/status", FORBIDDEN, qos=1, retain=True)
        await car.publish(f"tcu/{victim}/connection", FORBIDDEN, qos=1, retain=True)
        await operator.publish(f"sim/{snoop}/control", b"retained marker", qos=1, retain=True)
    filters = ("tcu/+/status", f"tcu/{victim}/connection", "#", f"sim/{snoop}/control")
    async with listening(mosquitto.client(snoop), *filters, name=snoop) as snooper:
        await snooper.wait_for(f"sim/{snoop}/control", b"retained marker", timeout=WAIT)
        assert forbidden_in(snooper) == []


async def test_an_app_cannot_read_another_apps_responses(mosquitto: MosquittoBroker) -> None:
    # app-1 even asks for app-2's client id: the broker replaces it with the username, and the ACL uses %u.
    snoop_filters = ("app/app-2/responses", "app/app-2/events", "app/+/responses", "app/#", "#", "tcu/+/status")
    async with (
        mosquitto.client("cloud") as cloud,
        listening(mosquitto.app_client("app-2"), "app/app-2/responses", "app/app-2/events", name="app-2") as owner,
        listening(
            mosquitto.app_client("app-1", identifier="app-2"), "app/app-1/responses", *snoop_filters, name="app-1"
        ) as snooper,
        mosquitto.client(CARS[0]) as car,
    ):
        await cloud.publish("app/app-2/responses", FORBIDDEN + b" response", qos=1)
        await cloud.publish("app/app-2/events", FORBIDDEN + b" event", qos=1)
        await car.publish(f"tcu/{CARS[0]}/status", FORBIDDEN, qos=1)
        await cloud.publish("app/app-1/responses", b"marker", qos=1)

        await snooper.wait_for("app/app-1/responses", b"marker", timeout=WAIT)
        assert forbidden_in(snooper) == []
        # The positive control: the owner did get both, so they really were published.
        await owner.wait_for("app/app-2/responses", timeout=WAIT)
        await owner.wait_for("app/app-2/events", timeout=WAIT)


# --- who gets in ---------------------------------------------------------------------------------------------------


async def test_app_logins(mosquitto: MosquittoBroker) -> None:
    assert (await mosquitto.probe_app("app-1")).accepted
    assert (await mosquitto.probe_app("app-1", "wrong password")).return_code == 5
    assert (await mosquitto.probe_app("app-9", "whatever")).return_code == 5
    assert (await mosquitto.probe_app(None)).return_code == 5  # no username
    assert (await mosquitto.probe_app("cloud", "")).return_code == 5  # service identities have no password


async def test_a_car_taking_over_another_cars_session_receives_nothing_of_it(mosquitto: MosquittoBroker) -> None:
    victim, intruder = CARS[0], CARS[1]
    async with mosquitto.client(victim, protocol=V311, clean_session=False) as car:
        await car.subscribe(f"tcu/{victim}/commands", qos=1)
    # The intruder connects with the victim's VIN as client id: the broker makes its client id its own CN (SPEC
    # §7), so it gets its own session, and the ACL judges by username anyway (T10 in test_session_takeover.py).
    async with (
        mosquitto.client("cloud") as cloud,
        listening(
            mosquitto.client(intruder, identifier=victim, protocol=V311, clean_session=False),
            f"tcu/{intruder}/commands",
            name="intruder",
        ) as intruder_inbox,
    ):
        await cloud.publish(f"tcu/{victim}/commands", FORBIDDEN, qos=1)
        await cloud.publish(f"tcu/{intruder}/commands", b"marker", qos=1)
        await intruder_inbox.wait_for(f"tcu/{intruder}/commands", b"marker", timeout=WAIT)
        assert forbidden_in(intruder_inbox) == []


async def test_a_last_will_on_another_cars_topic_is_dropped(mosquitto: MosquittoBroker) -> None:
    dropper, victim = CARS[0], CARS[1]
    async with listening(mosquitto.client("cloud"), "tcu/+/connection", name="cloud") as cloud:
        # The car drops off the network (no DISCONNECT): the broker publishes its will — if the ACL allows it.
        bad = await mosquitto.probe(
            dropper, client_id=dropper, will=(f"tcu/{victim}/connection", FORBIDDEN), disconnect=False
        )
        assert bad.accepted
        good = await mosquitto.probe(
            dropper, client_id=dropper, will=(f"tcu/{dropper}/connection", b"offline"), disconnect=False
        )
        assert good.accepted
        await cloud.wait_for(f"tcu/{dropper}/connection", b"offline", timeout=WAIT)
        assert forbidden_in(cloud) == []
