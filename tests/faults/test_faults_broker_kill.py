"""A broker killed (SIGKILL) in the middle of a run loses no status the cloud acknowledged and applies none
twice, though cars send again what the dead broker never acknowledged to them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from faults_kit import WAIT, CloudWorld, claims, cloud_world, fleet, offline_sessions

from tcu_sim.clock import SystemClock, VirtualClock
from tcu_sim.faults import BrokerControl, FleetFaults, broker_control
from tcu_sim.fleet import ScenarioAction
from tcu_sim.testing import MosquittoBroker

CONFIG = """
name: broker-kill
seed: 9
defaults:
  status_interval_s: 2s
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 3, model: leon, equipment: media_system}
"""


def _applied_statuses(world: CloudWorld, vin: str) -> int:
    return sum(1 for h in world.handled if h.vin == vin and h.kind == "status" and h.applied)


async def _statuses_flow(world: CloudWorld, more: int) -> None:
    """Wait until every car has `more` statuses applied beyond what it has now."""
    targets = {car.vin: _applied_statuses(world, car.vin) + more for car in world.rig.cars}
    await world.handler.wait_for(
        lambda _: all(_applied_statuses(world, vin) >= n for vin, n in targets.items()), WAIT * 2
    )


async def test_a_killed_broker_loses_nothing_the_cloud_acknowledged_and_applies_nothing_twice(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    # Real time sped up 10x: a status every 0.2 s from each car, so the kill lands among messages in flight.
    async with cloud_world(mosquitto, fleet(CONFIG), tmp_path, clock=SystemClock(scale=10)) as world:
        rig = world.rig
        await _statuses_flow(world, 3)
        async with BrokerControl(mosquitto, tmp_path / "broker.sock") as control:
            # The kill, as a scenario or `tcu-sim fault broker kill` does it.
            await broker_control(control.path, "kill")
            acknowledged = [h for h in world.handled if h.seq is not None]  # received by the cloud before the kill
            for car in rig.cars:
                await rig.runner.sessions[car.vin].wait_offline(WAIT)
            await broker_control(control.path, "start")
        await rig.runner.wait_all_online(WAIT)
        await world.handler.wait_ready(WAIT)
        await _statuses_flow(world, 3)
        await world.handler.drain(WAIT)

        # Nothing the cloud acknowledged is lost: each was applied (or was a copy of one that was).
        assert acknowledged
        for h in acknowledged:
            assert h.applied or h.reason == "duplicate", h
        # Nothing is applied twice, however often it arrived.
        applied = Counter((h.vin, h.kind, h.seq) for h in world.handled if h.applied and h.seq is not None)
        assert max(applied.values()) == 1
        refused = {h.reason for h in world.handled if not h.applied and h.seq is not None}
        assert refused <= {"duplicate"}  # a refusal is only ever a message seen before
        # The registry keeps each car's newest status: the newest applied before the kill is not lost either.
        for car in rig.cars:
            statuses = [h for h in world.handled if h.vin == car.vin and h.kind == "status" and h.applied]
            newest = max(statuses, key=lambda h: h.seq or 0)
            before_kill = [h for h in acknowledged if h.vin == car.vin and h.kind == "status" and h.applied]
            state = await world.registry.get_vehicle_state(car.vin)
            assert state is not None
            assert state.online is True
            assert state.status is not None
            assert state.status["updated_at"] == claims(newest.payload)["body"]["updated_at"]
            assert state.status["updated_at"] >= max(claims(h.payload)["body"]["updated_at"] for h in before_kill)


async def test_broker_steps_act_on_the_broker_the_run_started_and_only_on_it(
    mosquitto: MosquittoBroker,
) -> None:
    clock = VirtualClock()
    sessions, cars = offline_sessions(fleet(CONFIG), clock)
    without = FleetFaults()
    await without.bind(sessions, cars, clock, (mosquitto.host, mosquitto.port))
    try:
        await without.broker_action(ScenarioAction.BROKER_KILL, None, source="test")
    finally:
        await without.detach()
    (refused,) = without.log.entries
    assert refused.refused == "this run did not start the broker"
    assert mosquitto.running

    faults = FleetFaults(broker=mosquitto)
    await faults.bind(sessions, cars, clock, (mosquitto.host, mosquitto.port))
    try:
        await faults.broker_action(ScenarioAction.BROKER_STOP, 10.0, source="test")
        assert not mosquitto.running
        mark = mosquitto.log_mark()
        await asyncio.sleep(0)  # the restart task takes its place on the clock
        await clock.advance(10.5)  # the clock says when it comes back
        await mosquitto.wait_for_log(r"mosquitto version \S+ running", since=mark, timeout=WAIT)
        assert mosquitto.running
        assert [(i.what, i.detail) for i in faults.log.entries] == [("stop", "back after 10s"), ("start", "")]
    finally:
        await faults.detach()
