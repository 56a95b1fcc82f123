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

from tcu_sim.app import AppClient, AppConnectionError, AppTimeout
from tcu_sim.clock import SystemClock
from tcu_sim.events import CarCommandHandled, CarConnection, CarMessageHandled, EventStream, Source
from tcu_sim.fleet import FleetRunner, parse_broker_url, select_shard
from tcu_sim.onboard import enrol, sign_up, wait_enrolled
from tcu_sim.protocol import CommandState, ControlMessage, encode_json
from tcu_sim.transport import Backoff

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

WAIT = 30.0


@pytest.mark.node_failover
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

            def app_client(token: str | None = None) -> AppClient:
                return AppClient(
                    cluster.host, cluster.mqtt_ports[2], APP, tls_context=cluster.ssl_context(APP), timeout=WAIT,
                    token=token,
                )

            async with app_client() as app:
                await sign_up(app, "driver@example.com", "a-long-password-1", "2580")
                await enrol(app, target, at_the_car)
                assert await wait_enrolled(app, {target}, WAIT) == set()
                token = app.token
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
            await cluster.wait_healthy(WAIT)  # the lost node's streams and consumers have new leaders
            # Right after the kill the cluster re-elects its JetStream leaders, and a node's MQTT gateway may stall
            # QoS 1 for a while (under load, past a request's timeout): the app then asks again on a new connection
            # with the same request id, which the cloud turns into the same single command.
            outcome: CommandState | None = None
            async with asyncio.timeout(3 * WAIT):
                while outcome is None:
                    try:
                        async with app_client(token) as app:
                            command_id = await app.command(target, "lock", spin="2580", request_id="failover-lock")
                            outcome = await app.wait_command(command_id, timeout=WAIT)
                    except (AppConnectionError, AppTimeout):
                        continue
            assert outcome is CommandState.SUCCEEDED
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
