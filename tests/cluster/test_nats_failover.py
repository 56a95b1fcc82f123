"""Failover (SPEC §9): a node of a running 3-node cluster is killed; every car it held comes back through another
node, its persistent session (kept by JetStream on the other nodes) still holds its subscriptions, no status is
applied twice, and a command sent while the car was moving executes exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from conftest import APP, ClusterFleet, cloud_on

from tcu_sim.app import AppClient
from tcu_sim.clock import SystemClock
from tcu_sim.events import CarCommandHandled, CarConnection, CarMessageHandled, EventStream, Source
from tcu_sim.fleet import FleetRunner, parse_broker_url, select_shard
from tcu_sim.onboard import enrol, sign_up, wait_enrolled
from tcu_sim.protocol import CommandState, ControlMessage, encode_json
from tcu_sim.transport import Backoff

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

WAIT = 30.0


async def test_killing_a_node_moves_its_cars_to_the_others_and_loses_nothing(
    cluster_fleet: ClusterFleet, tmp_path: Path
) -> None:
    cluster, state = cluster_fleet.cluster, cluster_fleet.state
    events = EventStream("failover-test")
    orders = ([0, 1, 2], [1, 2, 0])  # shard 1 starts on node 0 (the one killed), shard 2 on node 1; cloud on 2
    with (
        events.subscribe(CarMessageHandled, buffer=5000, name="statuses") as handled,
        events.subscribe(CarCommandHandled, buffer=1000, name="executed") as executed,
        events.subscribe(CarConnection, buffer=1000, name="connections") as connections,
    ):
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(cloud_on(cluster_fleet, 2, events, f"sqlite://{tmp_path}/registry.db"))
            shards = []
            for index, order in enumerate(orders, start=1):
                runner = FleetRunner(
                    select_shard(cluster_fleet.cars, index, 2),
                    state=state,
                    broker=[parse_broker_url(cluster.urls[node]) for node in order],
                    clock=SystemClock(),
                    events=events,
                    backoff=Backoff(base_s=0.2, cap_s=2.0),
                )
                shards.append(await stack.enter_async_context(runner))
            for runner in shards:
                await runner.wait_all_online(WAIT)
            moved = set(shards[0].sessions)
            sessions = {vin: s for runner in shards for vin, s in runner.sessions.items()}

            async def at_the_car(vin: str, message: ControlMessage) -> None:
                sessions[vin].handle_control(encode_json(message.model_dump(mode="json")))

            target = sorted(moved)[0]
            app = await stack.enter_async_context(
                # A cluster that just lost a node re-elects its JetStream leaders before QoS 1 flows again: on a
                # loaded machine that took longer than the app's default 10 s to answer.
                AppClient(cluster.host, cluster.mqtt_ports[2], APP, tls_context=cluster.ssl_context(APP), timeout=WAIT)
            )
            await sign_up(app, "driver@example.com", "a-long-password-1", "2580")
            await enrol(app, target, at_the_car)
            assert await wait_enrolled(app, {target}, WAIT) == set()
            connections.drain()

            await cluster.kill_node(0)
            # Every car of the killed node notices, and comes back through another node.
            back: set[str] = set()
            async with asyncio.timeout(WAIT):
                while back != moved:
                    event = await connections.get()
                    if event.source is Source.FLEET and event.online and event.vin in moved:
                        back.add(event.vin)
            for runner in shards:
                await runner.wait_all_online(WAIT)
            command_id = await app.command(target, "lock", spin="2580")
            assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
            # Every car sent a status on reconnecting; the cloud applies one from each car that moved.
            fresh: set[str] = set()
            statuses: list[CarMessageHandled] = []
            async with asyncio.timeout(WAIT):
                while fresh != moved:
                    message = await handled.get()
                    statuses.append(message)
                    if message.topic_kind == "status" and message.applied and message.vin in moved:
                        fresh.add(message.vin)
        statuses += [e for e in handled.drain() if e.topic_kind == "status"]
        locks = [e for e in executed.drain() if e.op == "lock"]
    applied = Counter((e.vin, e.seq) for e in statuses if e.topic_kind == "status" and e.applied)
    assert [key for key, count in applied.items() if count > 1] == []  # nothing applied twice
    assert [(e.vin, e.command_id, e.outcome) for e in locks] == [(target, command_id, "succeeded")]  # exactly once
