"""What the fault layer does shows in the run's event stream (SPEC §8): faults applied and ended, zones, broker
actions (from a timeline step and from the control socket); and the scenario's cloud observer reads the cloud's
outcomes from the same kind of stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faults_kit import fleet, offline_sessions

from tcu_sim.clock import VirtualClock
from tcu_sim.events import BrokerAction, CarMessageHandled, EventStream, FaultChanged, Source
from tcu_sim.faults import (
    BrokerControl,
    ClearFault,
    ClearWhat,
    ClockSkewFault,
    FleetFaults,
    OfflineFault,
    OnlineFault,
    broker_control,
)
from tcu_sim.fleet import BrokerUrl, FleetRunner, ScenarioAction, StateDir, expand_fleet, provision
from tcu_sim.scenario import CloudObserver, Handled

CONFIG = """
name: fault-events
seed: 4
defaults:
  status_interval_s: 1h
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 2, model: leon, equipment: media_system}
"""


class FakeBroker:
    """A broker a run may stop, kill and start (what `ControllableBroker` asks), recording what was done."""

    def __init__(self) -> None:
        self.running = True
        self.done: list[str] = []

    async def stop(self) -> None:
        self.running = False
        self.done.append("stop")

    async def kill(self) -> None:
        self.running = False
        self.done.append("kill")

    async def start(self) -> None:
        self.running = True
        self.done.append("start")

    async def restart(self) -> None:
        self.done.append("restart")


async def test_faults_applied_and_ended_are_published() -> None:
    clock = VirtualClock()
    sessions, cars = offline_sessions(fleet(CONFIG), clock)
    stream = EventStream("test")
    seen = stream.subscribe(FaultChanged)
    faults = FleetFaults(apply_profiles=False)
    await faults.bind(sessions, cars, clock, ("127.0.0.1", 1), events=stream)
    vin = cars[0].vin
    try:
        car = faults.car(vin)
        await car.apply(OfflineFault(duration_s=30), source="test")
        await car.apply(OnlineFault(), source="test")
        await car.apply(ClockSkewFault(skew_s=600, duration_s=10), source="test")
        await asyncio.sleep(0)  # the skew's end takes its place on the clock
        await clock.advance(11)
        await car.apply(ClearFault(what=ClearWhat.ALL), source="test")
    finally:
        await faults.detach()
    events = seen.drain()
    assert [(e.target, e.fault, e.active) for e in events] == [
        (vin, "offline", True),
        (vin, "offline", False),
        (vin, "clock_skew", True),
        (vin, "clock_skew", False),
        (vin, "all", False),
    ]
    assert all(e.source is Source.FAULTS for e in events)
    assert events[0].detail == "offline hard for 30s"


async def test_broker_steps_are_published_as_broker_actions() -> None:
    clock = VirtualClock()
    sessions, cars = offline_sessions(fleet(CONFIG), clock)
    stream = EventStream("test")
    seen = stream.subscribe(BrokerAction)
    broker = FakeBroker()
    faults = FleetFaults(broker=broker)
    await faults.bind(sessions, cars, clock, ("127.0.0.1", 1), events=stream)
    try:
        await faults.broker_action(ScenarioAction.BROKER_KILL, 10.0, source="test")
        await faults.broker_action(ScenarioAction.BROKER_RESTART, None, source="test")
        await asyncio.sleep(0)
        await clock.advance(10.5)
    finally:
        await faults.detach()
    assert [(e.action, e.detail) for e in seen.drain()] == [("kill", "back after 10s"), ("restart", ""), ("start", "")]
    assert broker.done == ["kill", "restart", "start"]


async def test_the_broker_control_socket_publishes_what_it_did(tmp_path: Path) -> None:
    stream = EventStream("test")
    seen = stream.subscribe(BrokerAction)
    broker = FakeBroker()
    async with BrokerControl(broker, tmp_path / "broker.sock", events=stream, clock=VirtualClock()) as control:
        await broker_control(control.path, "stop")
        await broker_control(control.path, "status")
        await broker_control(control.path, "start")
    assert [e.action for e in seen.drain()] == ["stop", "start"]


async def test_the_fleet_runner_hands_its_event_stream_to_the_fault_layer(tmp_path: Path) -> None:
    config = fleet(CONFIG)
    state = StateDir(tmp_path / "state")
    provision(config, state, clock=VirtualClock(), pki=False)
    faults = FleetFaults.from_config(config)
    runner = FleetRunner(expand_fleet(config), state=state, broker=BrokerUrl("127.0.0.1", 1, False),
                         clock=VirtualClock(), faults=faults)
    seen = runner.events.subscribe(FaultChanged)
    async with runner:
        vin = runner.cars[1].vin
        await faults.car(vin).apply(OfflineFault(), source="test")
    (event,) = seen.drain()
    assert (event.target, event.fault, event.active) == (vin, "offline", True)


def _handled(vin: str, seq: int | None, applied: bool, reason: str | None, token: bytes) -> CarMessageHandled:
    return CarMessageHandled(at=0.0, source=Source.CLOUD, vin=vin, topic_kind="status", applied=applied, seq=seq,
                             reason=reason, token=token)


async def test_the_cloud_observer_reads_the_cloud_s_outcomes_from_its_event_stream() -> None:
    stream = EventStream("cloud")
    with CloudObserver(stream) as observer:
        stream.publish(_handled("VIN1", 1, True, None, b"a.b.c"))
        stream.publish(_handled("VIN1", 1, False, "duplicate", b"a.b.c"))
        stream.publish(_handled("VIN2", None, False, "bad_signature", b"x.e30.z"))  # claims {} : no seq
        assert observer.applied["VIN1"] == [1]
        assert observer.refused["VIN1"] == {"duplicate": 1}
        assert observer.refused["VIN2"] == {"bad_signature": 1}
        assert observer.by_payload[b"a.b.c"] == Handled("VIN1", "status", 1, False, "duplicate", b"a.b.c")
        assert len(observer.handled) == 3
    stream.publish(_handled("VIN1", 2, True, None, b"d.e.f"))  # closed: no longer followed
    assert len(observer.handled) == 3
