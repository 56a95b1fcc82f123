"""A real 3-node NATS cluster (SPEC §9): fleet shards on two nodes, the cloud and the app on others; commands,
statuses and the permission matrix hold across nodes.

The permission matrix is judged by the same oracle as the Mosquitto configuration, `AclPolicy.allows`: every
identity publishes to every topic of SPEC §2.1 from its node, and an auditor on another node sees exactly the
allowed ones. A denial is proven without sleeping: each publisher's forbidden messages go first, then an
acknowledged marker on a topic it may write, travelling the same way; the auditor awaits every marker and only
then compares what it saw with the oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt
import pytest
from conftest import APP, AUDITOR, ClusterFleet, cloud_on

from broker.mosquitto import AclAction, ListenerKind
from tcu_sim.app import AppClient
from tcu_sim.clock import SystemClock
from tcu_sim.events import CarCommandHandled, CarMessageHandled, EventStream
from tcu_sim.fleet import FleetRunner, parse_broker_url, select_shard
from tcu_sim.onboard import enrol, sign_up, wait_enrolled
from tcu_sim.protocol import CommandState, ControlMessage, encode_json
from tcu_sim.testing import Inbox

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

WAIT = 20.0
FORBIDDEN = b"forbidden"


def _topics(vins: list[str]) -> list[str]:
    per_car = ("status", "events", "commands", "results", "connection")
    topics = [f"tcu/{vin}/{kind}" for vin in vins for kind in per_car]
    topics += [f"sim/{vin}/control" for vin in vins]
    topics += [f"app/{APP}/{kind}" for kind in ("requests", "responses", "events")]
    topics += ["app/app-two/requests", "app/app-two/responses"]
    return topics


async def test_the_permission_matrix_holds_across_nodes(cluster_fleet: ClusterFleet) -> None:
    cluster, policy = cluster_fleet.cluster, cluster_fleet.cluster.policy
    car_a, car_b = cluster_fleet.vins[:2]
    publishers = [car_a, car_b, "cloud", "operator", APP]
    markers = {
        car_a: f"tcu/{car_a}/events",
        car_b: f"tcu/{car_b}/events",
        "cloud": f"tcu/{car_a}/commands",
        "operator": f"sim/{car_a}/control",
        APP: f"app/{APP}/requests",
    }
    topics = _topics([car_a, car_b])
    async with cluster.client(AUDITOR, node=2) as auditor, Inbox(auditor, name="auditor") as seen:
        await auditor.subscribe("#", qos=1)
        for number, who in enumerate(publishers):
            async with cluster.client(who, node=number % 2, identifier=f"{who}-pub") as client:
                for topic in topics:
                    with contextlib.suppress(aiomqtt.MqttError):  # a denied QoS 1 publish may close the link
                        await client.publish(topic, FORBIDDEN + who.encode(), qos=1)
            async with cluster.client(who, node=number % 2, identifier=f"{who}-mark") as client:
                await client.publish(markers[who], b"marker:" + who.encode(), qos=1)
            await seen.wait_for(markers[who], b"marker:" + who.encode(), timeout=WAIT)
        got = {
            (m.payload[len(FORBIDDEN) :].decode(), m.topic.value)
            for m in seen.messages
            if isinstance(m.payload, bytes) and m.payload.startswith(FORBIDDEN)
        }
    expected = {
        (who, topic)
        for who in publishers
        for topic in topics
        if policy.allows(who, ListenerKind.DEVICE, AclAction.PUBLISH, topic)
    }
    assert got == expected
    assert (car_a, f"tcu/{car_b}/status") not in got  # the point of it all, spelled out


async def test_a_car_reads_only_its_own_topics_from_any_node(cluster_fleet: ClusterFleet) -> None:
    cluster = cluster_fleet.cluster
    car_a, car_b = cluster_fleet.vins[:2]
    async with (
        cluster.client(car_a, node=0) as spy,
        Inbox(spy, name="car-a") as spied,
        cluster.client(car_b, node=1) as victim,
        Inbox(victim, name="car-b") as received,
        cluster.client("cloud", node=2) as cloud,
    ):
        for topic_filter in (f"tcu/{car_b}/commands", "tcu/+/commands", "tcu/#", "#", f"tcu/{car_a}/commands"):
            with contextlib.suppress(aiomqtt.MqttError):
                await spy.subscribe(topic_filter, qos=1)
        await victim.subscribe(f"tcu/{car_b}/commands", qos=1)
        await cloud.publish(f"tcu/{car_b}/commands", FORBIDDEN, qos=1)
        await received.wait_for(f"tcu/{car_b}/commands", FORBIDDEN, timeout=WAIT)
        await cloud.publish(f"tcu/{car_a}/commands", b"marker", qos=1)
        await spied.wait_for(f"tcu/{car_a}/commands", b"marker", timeout=WAIT)
        assert spied.topics() == [f"tcu/{car_a}/commands"]


async def test_shards_on_two_nodes_and_the_cloud_on_a_third_pass_commands_and_statuses(
    cluster_fleet: ClusterFleet, tmp_path: Path
) -> None:
    cluster, state = cluster_fleet.cluster, cluster_fleet.state
    events = EventStream("cluster-test")
    vins = set(cluster_fleet.vins)
    with (
        events.subscribe(CarMessageHandled, buffer=1000, name="statuses") as handled,
        events.subscribe(CarCommandHandled, buffer=1000, name="executed") as executed,
    ):
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(cloud_on(cluster_fleet, 2, events, f"sqlite://{tmp_path}/registry.db"))
            shards = []
            for index in (1, 2):  # shard 1 on node 0, shard 2 on node 1
                runner = FleetRunner(
                    select_shard(cluster_fleet.cars, index, 2),
                    state=state,
                    broker=parse_broker_url(cluster.urls[index - 1]),
                    clock=SystemClock(),
                    events=events,
                )
                shards.append(await stack.enter_async_context(runner))
            for runner in shards:
                await runner.wait_all_online(WAIT)
            applied: set[str] = set()
            async with asyncio.timeout(WAIT):
                async for event in handled:
                    if event.topic_kind == "status" and event.applied:
                        applied.add(event.vin)
                    if applied == vins:
                        break

            sessions = {vin: s for runner in shards for vin, s in runner.sessions.items()}

            async def at_the_car(vin: str, message: ControlMessage) -> None:
                sessions[vin].handle_control(encode_json(message.model_dump(mode="json")))

            targets = [next(iter(runner.sessions)) for runner in shards]  # one car of each shard
            app = AppClient(cluster.host, cluster.mqtt_ports[0], APP, tls_context=cluster.ssl_context(APP))
            async with app:
                await sign_up(app, "driver@example.com", "a-long-password-1", "2580")
                for vin in targets:
                    await enrol(app, vin, at_the_car)
                assert await wait_enrolled(app, set(targets), WAIT) == set()
                for vin in targets:
                    command_id = await app.command(vin, "lock", spin="2580")
                    assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        done = [e for e in executed.drain() if e.op == "lock"]
    assert sorted((e.vin, e.outcome) for e in done) == sorted((vin, "succeeded") for vin in targets)  # once each
