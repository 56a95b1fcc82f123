"""tcu_sim.testing: the sandbox's one event stream, over a real broker with the real cloud and real cars — a
command's steps and its expiry as the stream reports them, and a subscriber that reads nothing slows nobody.

(The stream's own unit tests are in tests/events/test_event_stream.py.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tcu_sim.events import CarCommandHandled, CarMessageHandled, CommandChanged, Event, Source, Subscription
from tcu_sim.protocol import CommandState
from tcu_sim.testing import Sandbox, SimBroker, SimCar, SimClock, SimCloud, SimFaults, SimFleet, SimUser

WAIT = 10.0
BURST = 8  # app commands at once: below the cloud's per-user burst (rate_capacity 10), so none is refused


async def states_of(steps: Subscription[CommandChanged], command_id: str) -> list[str]:
    """The states the stream reports for `command_id`, up to its final one."""
    states = []
    async with asyncio.timeout(WAIT):
        while True:
            event = await steps.get()
            if event.command_id == command_id:
                states.append(event.state)
                if CommandState(event.state).is_final:
                    return states


async def enrol_and_settle(tcu_sandbox: Sandbox, app_user: SimUser, car: SimCar) -> None:
    """Enrol the car, and return once the car has executed the enrolment's confirmation (R8: a notice in the
    infotainment, a command of the cloud's own) and the cloud has applied the car's two results for it."""
    with tcu_sandbox.events.subscribe(CarCommandHandled, CarMessageHandled, name="enrolment") as events:
        await app_user.enrol(car)
        shown, results = False, 0
        async with asyncio.timeout(WAIT):
            while not shown or results < 2:
                event = await events.get()
                if isinstance(event, CarCommandHandled) and event.vin == car.vin:
                    shown = shown or event.op == "infotainment.notify"
                elif isinstance(event, CarMessageHandled) and event.vin == car.vin and event.topic_kind == "results":
                    assert event.applied, event
                    results += 1


async def test_the_cloud_and_the_fleet_publish_into_the_sandbox_stream(
    tcu_sandbox: Sandbox, cloud: SimCloud, fleet: SimFleet, car: SimCar, app_user: SimUser
) -> None:
    assert cloud.events is tcu_sandbox.events
    assert fleet.events is tcu_sandbox.events
    assert fleet.runner.events is tcu_sandbox.events
    assert cloud.handler.events is tcu_sandbox.events
    await app_user.enrol(car)
    with tcu_sandbox.events.subscribe(CarCommandHandled, name="car side") as car_side:
        command_id = await app_user.send(car, "honk_and_flash", {"mode": "flash", "duration_s": 5})
        handled = await car_side.wait_for(lambda e: e.command_id == command_id, timeout=WAIT)
    assert (handled.source, handled.vin, handled.outcome) == (Source.FLEET, car.vin, "succeeded")


async def test_a_command_and_its_expiry_step_by_step_on_the_stream(
    tcu_sandbox: Sandbox, car: SimCar, app_user: SimUser, faults: SimFaults, clock: SimClock
) -> None:
    await app_user.enrol(car)
    async with tcu_sandbox.events.subscribe(CommandChanged, name="lock") as steps:
        lock = await app_user.send(car, "lock")
        assert await states_of(steps, lock) == ["queued", "delivered", "in_progress", "succeeded"]

    await faults.offline(car)
    async with tcu_sandbox.events.subscribe(CommandChanged, name="unlock") as steps:
        unlock = await app_user.send(car, "unlock")
        delivered = await steps.wait_for(lambda e: e.command_id == unlock and e.state == "delivered", timeout=WAIT)
        assert delivered.vin == car.vin
        await clock.advance(120)  # past the TTL (60 s) and the car's clock-skew allowance (30 s)
        expired = await steps.wait_for(lambda e: e.command_id == unlock, timeout=WAIT)
    assert expired.state == "timed_out"
    assert (expired.op, expired.vin, expired.source) == ("unlock", car.vin, Source.CLOUD)
    assert expired.at >= expired.expires_at


async def test_a_stalled_subscriber_does_not_slow_the_cloud(
    tcu_sandbox: Sandbox, cloud: SimCloud, car: SimCar, app_user: SimUser
) -> None:
    await enrol_and_settle(tcu_sandbox, app_user, car)
    await cloud.handler.drain(WAIT)  # nothing half-handled when the counters are read
    stats = cloud.stats
    received, applied, refused = Counter(stats.received), Counter(stats.applied), Counter(stats.refused)
    errors, dropped_incoming = stats.handler_errors, stats.dropped_incoming
    stalled: Subscription[Event] = tcu_sandbox.events.subscribe(buffer=1, name="stalled")  # read by nobody
    reader = tcu_sandbox.events.subscribe(CommandChanged, CarMessageHandled, name="reader")
    with stalled, reader:
        ids = set(await asyncio.gather(*(app_user.send(car, "status.refresh") for _ in range(BURST))))
        assert len(ids) == BURST
        succeeded: set[str] = set()
        statuses = 0  # each status.refresh makes the car send one status, after its result
        async with asyncio.timeout(WAIT):
            while succeeded != ids or statuses < BURST:
                event = await reader.get()
                if isinstance(event, CommandChanged) and event.command_id in ids:
                    assert event.state in {"queued", "delivered", "in_progress", "succeeded"}, event
                    if event.state == "succeeded":
                        succeeded.add(event.command_id)
                elif isinstance(event, CarMessageHandled) and event.vin == car.vin and event.topic_kind == "status":
                    assert event.applied, event
                    statuses += 1
        await cloud.handler.drain(WAIT)

        assert stalled.dropped > 0
        assert (stalled.received, stalled.pending) == (1, 1)
        assert reader.dropped == 0
        assert tcu_sandbox.events.dropped == stalled.dropped
    for command_id in ids:
        record = await cloud.command(command_id)
        assert record is not None
        assert record.state is CommandState.SUCCEEDED
    # The cloud lost nothing: every car message of the burst was applied, none refused, none dropped.
    new_received = Counter(stats.received) - received
    assert new_received == Counter(stats.applied) - applied
    assert new_received["status"] >= BURST
    assert new_received["results"] == 2 * BURST  # accepted, then succeeded
    assert Counter(stats.refused) == refused
    assert (stats.handler_errors, stats.dropped_incoming) == (errors, dropped_incoming)


async def test_the_cloud_reads_the_stream_with_a_task_it_owns(mqtt_broker: SimBroker, tmp_path: Path) -> None:
    def waiters() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("sim-cloud[") and not t.done()]

    async with Sandbox(tmp_path, broker=mqtt_broker, name="owned") as sandbox:
        assert len(waiters()) == 1
        assert sandbox.events.subscribers == 1  # the cloud's waiters read CommandChanged like anyone else
        assert sandbox.cloud.events is sandbox.events
    assert waiters() == []  # cancelled and awaited on exit
    assert sandbox.events.subscribers == 0
