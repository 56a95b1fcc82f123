"""The resilience matrix (docs/reliability.md), T1-T9: a fault injected into a small running system (real
Mosquitto, the real cloud, three real cars, an app user), and the sandbox's event stream counted by the
`Ledger`: every test asserts 0 acknowledged messages lost, 0 applied twice, 0 cross-car deliveries, and prints
its figures as one JSON line (`pytest tests/reliability -s`). Time rules run on the virtual clock.

(T10 client-id takeover and T11 permission matrix live with the broker's tests; T12 is tests/fuzz.)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability_kit import FLEET, WAIT, Ledger, assert_clean

from broker.handler import HandlerConfig
from tcu_sim.events import CarCommandHandled, CarConnection, CarMessageHandled
from tcu_sim.faults import Attacker, attack_grants
from tcu_sim.fleet import expand_fleet, parse_fleet
from tcu_sim.protocol import Topics
from tcu_sim.testing import NotSupported, Sandbox, SimCar, SimClock, SimFaults, SimFleet, SimUser
from tcu_sim.testing.plugin import require_mosquitto
from tcu_sim.transport import Backoff

pytestmark = pytest.mark.tcu_fleet(FLEET)

HONK = {"mode": "flash", "duration_s": 5}


@pytest.fixture
async def cars(fleet: SimFleet, app_user: SimUser) -> list[SimCar]:
    """The fleet's three cars, each enrolled by the app user."""
    enrolled = [fleet.car(i) for i in range(3)]
    for car in enrolled:
        await app_user.enrol(car)
    return enrolled


@pytest.fixture
async def ledger(tcu_sandbox: Sandbox, cars: list[SimCar], request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    """Counts from after the enrolments on."""
    ledger = Ledger(tcu_sandbox, request.node.name)
    try:
        yield ledger
    finally:
        ledger.close()


async def honk_each(ledger: Ledger, user: SimUser, cars: list[SimCar]) -> list[str]:
    return [await ledger.send(user, car, "honk_and_flash", HONK) for car in cars]


@pytest.mark.unsettled
async def test_t1_graceful_broker_restart(
    ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults
) -> None:
    """A broker stopped cleanly (it saves its sessions) while commands are in flight, then started again."""
    before = await honk_each(ledger, app_user, cars)
    await faults.broker_restart()  # returns once the cloud, the cars and the app are back
    after = await honk_each(ledger, app_user, cars)
    finals = await ledger.wait_final(before + after)
    figures = ledger.figures("T1", restarts=1)
    assert set(finals.values()) == {"succeeded"}, finals
    assert_clean(figures)


async def test_t2_broker_sigkill_with_persistence(
    ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults, clock: SimClock
) -> None:
    """A broker killed (SIGKILL) with commands in flight: what it had not saved is gone, so a command may end as
    timed_out (the app is told), but none is lost without a word and none runs twice."""
    before = await honk_each(ledger, app_user, cars)
    await faults.broker_kill()
    await faults.broker_start()
    after = await honk_each(ledger, app_user, cars)
    assert set((await ledger.wait_final(after)).values()) == {"succeeded"}
    await clock.advance(120)  # past the command TTL: whatever the dead broker lost now times out
    finals = await ledger.wait_final(before)
    figures = ledger.figures("T2", kills=1)
    assert set(finals.values()) <= {"succeeded", "timed_out"}, finals
    assert_clean(figures)


async def test_t6_replays_and_duplicates(
    tcu_sandbox: Sandbox, ledger: Ledger, cars: list[SimCar], app_user: SimUser
) -> None:
    """Every status and result the cloud applied is sent again with the car's own certificate (a cloned TCU);
    every command a car executed is sent to it again as the cloud would. All are refused, nothing changes."""
    topics = Topics(tcu_sandbox.topic_prefix)
    try:
        await tcu_sandbox.broker.grant(attack_grants(topics, [car.vin for car in cars]))
    except NotSupported:
        pytest.skip("T6 grants the attacker's identities on Mosquitto's ACL (run with the default --tcu-broker)")
    attacker = Attacker(tcu_sandbox.broker.client, topics)
    async with attacker.wiretap(cars[0].vin) as captured:
        sent = [await ledger.send(app_user, car, "status.refresh") for car in cars]  # each car answers with a status
        await ledger.wait_final(sent)
    ledger.read()
    applied = [
        e for e in ledger.events
        if isinstance(e, CarMessageHandled) and e.applied and e.token and e.topic_kind == "status"
    ]
    assert applied
    commands = list(captured)
    assert commands, tcu_sandbox.broker.log_tail(40)
    with tcu_sandbox.events.subscribe(CarMessageHandled, CarCommandHandled, name="replays") as replies:
        for message in applied:
            await attacker.inject_status(message.vin, message.token)
        for token in commands:
            await attacker.inject_command(cars[0].vin, token)
        statuses = len(applied)
        refused: Counter[str] = Counter()
        async with asyncio.timeout(WAIT):
            while sum(refused.values()) < statuses + len(commands):
                event = await replies.get()
                if isinstance(event, CarMessageHandled) and event.token in {m.token for m in applied}:
                    assert not event.applied, event
                    refused[f"status:{event.reason}"] += 1
                elif isinstance(event, CarCommandHandled) and event.outcome == "rejected":
                    refused[f"command:{event.reason}"] += 1
    figures = ledger.figures("T6", forged=statuses, replays_sent=statuses + len(commands), refused=dict(refused))
    assert set(refused) <= {"status:duplicate", "command:replayed"}, refused
    assert_clean(figures)


async def test_t7_expiry(
    ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults, clock: SimClock
) -> None:
    """Commands to a car that is away longer than their TTL time out; when the car comes back, the broker hands
    it the expired commands and it refuses them (`expired`): nothing runs late."""
    away, others = cars[0], cars[1:]
    await faults.offline(away)
    late = [await ledger.send(app_user, away, "honk_and_flash", HONK) for _ in range(2)]
    on_time = await honk_each(ledger, app_user, others)
    assert set((await ledger.wait_final(on_time)).values()) == {"succeeded"}
    await clock.advance(120)  # TTL 60 s, plus the car's 30 s clock-skew allowance
    assert set((await ledger.wait_final(late)).values()) == {"timed_out"}
    await faults.online(away)
    ledger.read()
    figures = ledger.figures("T7", expired=len(late))
    executed_late = [e for e in ledger.events if isinstance(e, CarCommandHandled) and e.command_id in late
                     and e.outcome != "rejected"]
    assert executed_late == []
    assert_clean(figures)


async def test_t8_persistent_sessions(
    ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults
) -> None:
    """A car away for less than the TTL gets what was sent meanwhile from its session on the broker, once."""
    away = cars[0]
    await faults.offline(away)
    queued = [await ledger.send(app_user, away, "honk_and_flash", HONK) for _ in range(3)]
    await faults.online(away)
    finals = await ledger.wait_final(queued)
    figures = ledger.figures("T8", queued_while_offline=len(queued))
    assert set(finals.values()) == {"succeeded"}, finals
    assert_clean(figures)


async def test_t9_last_will(
    tcu_sandbox: Sandbox, ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults
) -> None:
    """A car whose connection just dies (no DISCONNECT) is marked offline by the last will the broker publishes
    for it, and only that car; it is online again when back, and commands reach every car once."""
    dropped = cars[0]
    with tcu_sandbox.events.subscribe(CarConnection, name="wills") as seen:
        await faults.offline(dropped, hard=True)
        await seen.wait_for(lambda e: e.source == "cloud" and e.vin == dropped.vin and not e.online, WAIT)
        marked_offline = await tcu_sandbox.cloud.vehicle_state(dropped.vin)
        await faults.online(dropped)
        await seen.wait_for(lambda e: e.source == "cloud" and e.vin == dropped.vin and e.online, WAIT)
    states = {car.vin: await tcu_sandbox.cloud.vehicle_state(car.vin) for car in cars}
    sent = await honk_each(ledger, app_user, cars)
    finals = await ledger.wait_final(sent)
    ledger.read()
    offline = Counter(
        e.vin for e in ledger.events if isinstance(e, CarConnection) and e.source == "cloud" and not e.online
    )
    figures = ledger.figures("T9", marked_offline=dict(offline))
    assert offline == {dropped.vin: 1}  # by its will, once; no other car
    assert marked_offline is not None
    assert marked_offline.online is False
    assert all(state is not None and state.online for state in states.values())
    assert set(finals.values()) == {"succeeded"}
    assert_clean(figures)


@pytest.mark.tcu_fleet(FLEET, proxy="car")
async def test_t4_network_toxics(
    ledger: Ledger, cars: list[SimCar], app_user: SimUser, faults: SimFaults, clock: SimClock
) -> None:
    """Each car on a fault-proxy route of its own: late bytes, bytes in fragments, then a route that resets every
    connection and one that swallows data (black hole) for 30 clock seconds. Commands sent meanwhile arrive once,
    after the toxic is gone; the other cars are not touched."""
    slow, sliced, cut = cars
    assert await faults.inject(slow, {"kind": "latency", "latency_ms": 300, "jitter_ms": 100})
    assert await faults.inject(sliced, {"kind": "slicer", "average_size": 8, "size_variation": 4, "delay_us": 200})
    assert set((await ledger.wait_final(await honk_each(ledger, app_user, cars))).values()) == {"succeeded"}

    held: list[str] = []
    for toxic in ({"kind": "reset", "duration_s": 30}, {"kind": "black_hole", "close_after_ms": 200, "duration_s": 30}):
        assert await faults.inject(cut, toxic)
        await cut.wait_offline(WAIT)
        held.append(await ledger.send(app_user, cut, "honk_and_flash", HONK))
        others = await honk_each(ledger, app_user, [slow, sliced])
        assert set((await ledger.wait_final(others)).values()) == {"succeeded"}
        await clock.advance(31)  # the toxic ends
        await faults.online(cut)  # and the car tries again at once instead of at the end of its backoff
    finals = await ledger.wait_final(held)
    figures = ledger.figures("T4", toxics=["latency", "slicer", "reset", "black_hole"])
    assert set(finals.values()) == {"succeeded"}, finals
    assert_clean(figures)


def test_t5_reconnect_storm_has_no_waves() -> None:
    """1,000 cars lose the broker at once for 10 s. Each retries as its session does (`Backoff`: capped
    exponential, full jitter, each car's own seeded random stream): after the outage they come back spread out, at
    most a fifth of the fleet in any second and fewer each later second (no second wave) — without jitter all would
    come back in the same instant. Pure: the
    schedule is computed, not waited for (the wall-clock storm of 10,000 cars is `make bench`, P4)."""
    cars, outage_s = 1000, 10.0
    backoff = Backoff()
    config = parse_fleet(FLEET.replace("count: 3", f"count: {cars}"))
    connects: list[float] = []
    for car in expand_fleet(config):
        rng, now, attempt = car.rng(), 0.0, 0
        while True:  # the connection is lost at 0; retry until the broker is back
            now += backoff.delay(attempt, rng)
            attempt += 1
            if now >= outage_s:
                connects.append(now)
                break
    per_second = Counter(int(t) for t in connects)
    peak, bound = max(per_second.values()), cars // 5
    figures = {
        "test": "T5", "cars": cars, "outage_s": outage_s, "backoff": f"{backoff.base_s}s x 2^n, cap {backoff.cap_s}s",
        "connects": len(connects), "peak_connects_per_s": peak, "bound_per_s": bound,
        "all_back_after_s": round(max(connects), 1), "connects_per_car": 1,
    }
    print(json.dumps(figures, sort_keys=True))
    assert len(connects) == cars  # each car comes back, once
    assert peak <= bound, sorted(per_second.items())
    first = min(per_second)
    assert all(per_second[second] <= per_second[first] for second in per_second), sorted(per_second.items())


async def test_t3_cloud_down_and_back(tmp_path: Path) -> None:
    """The cloud process goes down (its handler leaves the broker; it keeps its session there, as deployed) while
    an app asks for a command and the cars report their status; it comes back. The request is answered and the
    command runs once; every status sent meanwhile is applied once; a command for a car that is away times out."""
    require_mosquitto()
    handler_config = HandlerConfig(
        session_expiry_s=3600, car_workers=2, app_workers=2, reconnect_base_s=0.05, reconnect_cap_s=1.0
    )
    async with Sandbox(tmp_path, broker="mosquitto", handler_config=handler_config, name="t3") as sandbox:
        fleet = await sandbox.start_fleet(FLEET)
        user = await sandbox.new_user()
        cars = [fleet.car(i) for i in range(3)]
        for car in cars:
            await user.enrol(car)
        ledger = Ledger(sandbox, "T3")
        try:
            away = cars[2]
            await sandbox.faults.offline(away)
            await sandbox.cloud.stop()
            # While the cloud is down: the app asks (the request waits in the cloud's session on the broker) ...
            asked = asyncio.create_task(ledger.send(user, cars[0], "honk_and_flash", HONK))
            asked_away = asyncio.create_task(ledger.send(user, away, "honk_and_flash", HONK))
            # ... and the cars send their periodic status (60 s interval).
            with sandbox.events.subscribe(CarMessageHandled, name="t3.statuses") as statuses:
                await sandbox.clock.advance(61)
                await sandbox.cloud.start()
                command_id, away_id = await asyncio.wait_for(asyncio.gather(asked, asked_away), WAIT)
                applied: set[str] = set()
                while applied != {cars[0].vin, cars[1].vin}:
                    event = await statuses.wait_for(lambda e: e.topic_kind == "status", WAIT)
                    assert event.applied, event
                    applied.add(event.vin)
            assert (await ledger.wait_final([command_id]))[command_id] == "succeeded"
            await sandbox.clock.advance(120)  # the away car's command outlives its TTL
            assert (await ledger.wait_final([away_id]))[away_id] == "timed_out"
            figures = ledger.figures("T3", cloud_restarts=1, statuses_while_down=len(applied))
        finally:
            ledger.close()
    assert_clean(figures)
