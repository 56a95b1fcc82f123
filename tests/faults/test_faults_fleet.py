"""The fault layer on a running fleet over the real Mosquitto: live `fault` controls, holds and jittered
returns, zones, profiles, signal, clock skew, proxy routes (in-process and Toxiproxy), the broker control."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faults_kit import WAIT, Rig, claims, fleet, fleet_rig
from faults_toxiproxy_fake import FakeToxiproxy

from tcu_sim.faults import (
    BrokerControl,
    BrokerControlError,
    FaultKind,
    FaultOperator,
    FaultProxy,
    FleetFaults,
    LatencyFault,
    OfflineFault,
    ProxyMode,
    Scope,
    ToxiproxyClient,
    WeakSignalFault,
    broker_control,
)
from tcu_sim.fleet import ScenarioAction, ScenarioStep
from tcu_sim.protocol import encode_json
from tcu_sim.testing import MosquittoBroker

BASE = """
name: faults-fleet
seed: 12
defaults:
  status_interval_s: 1h
  home_area: {center: {lat: 41.3900, lon: 2.1700}, radius_km: 0.2}
groups:
  - {name: leon, count: 2, model: leon, equipment: media_system}
"""


async def _operator_send(rig: Rig, vins: list[str], fault: OfflineFault | LatencyFault | WeakSignalFault) -> str:
    async with rig.broker.client("operator", identifier="faults-test-operator") as client:
        return await FaultOperator(client).send(vins, fault)


def _will_fired(rig: Rig, vin: str) -> bool:
    return bool(rig.inbox.received(f"tcu/{vin}/connection", b"offline"))


async def test_live_offline_fault_drops_the_car_fills_its_outbox_and_it_returns(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        session, vin = rig.session(0), rig.cars[0].vin
        await _operator_send(rig, [vin], OfflineFault(duration_s=30))
        await rig.inbox.wait_for(f"tcu/{vin}/connection", b"offline", timeout=WAIT)  # the last will
        assert not session.online
        assert rig.faults.car(vin).offline
        session.handle_control(encode_json({"action": "unlock_key", "params": {}}))
        session.handle_control(encode_json({"action": "open_door", "params": {"door": "trunk"}}))
        assert len(session.outbox) >= 3  # events and statuses wait for the signal
        last_waiting = session.seq.last_issued
        await rig.advance(20)
        assert not session.online  # 30 s are not over
        await rig.advance_until(lambda: session.online, limit=20)  # 30 s + at most 2 s of jitter
        await rig.inbox.wait_until(lambda _: max(rig.seqs(vin), default=0) >= session.seq.last_issued, timeout=WAIT)
        assert session.seq.last_issued > last_waiting  # a fresh status on reconnect, after the outbox
        seqs = sorted(rig.seqs(vin))
        assert seqs == list(range(1, session.seq.last_issued + 1))  # none missing, none twice
        assert rig.session(1).online  # the other car never noticed
        assert [i.what for i in rig.faults.log.entries] == ["offline hard for 30s"]


async def test_a_fault_delivered_twice_is_applied_once(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        vin = rig.cars[0].vin
        fault = OfflineFault(id="op-twice", duration_s=5)
        await _operator_send(rig, [vin], fault)
        await _operator_send(rig, [vin], fault)
        await rig.inbox.wait_for(f"tcu/{vin}/connection", b"offline", timeout=WAIT)
        await rig.advance_until(lambda: rig.session(0).online, limit=20)
        assert len(rig.faults.log) == 1


async def test_a_bad_fault_control_is_refused_and_counted(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        vin = rig.cars[0].vin
        async with rig.broker.client("operator", identifier="faults-test-operator") as client:
            await client.publish(f"sim/{vin}/control", encode_json({"action": "fault", "params": {"kind": "meteor"}}))
            await FaultOperator(client).control([vin], "lights_on")  # a marker the car handles after the fault
        await rig.inbox.wait_until(lambda _: any(b"lights" in t for t in rig.received(vin, "status")) or
                                   rig.faults.refused_controls > 0, timeout=WAIT)
        assert rig.faults.refused_controls == 1
        (injection,) = rig.faults.log.entries
        assert injection.refused is not None
        assert "kind" in injection.refused
        assert rig.session(0).online


async def test_parking_in_an_underground_car_park_loses_the_signal_until_the_car_leaves(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = fleet(BASE + """
zones:
  - name: Aparcament
    kind: underground_parking
    circle: {center: {lat: 41.3990, lon: 2.1700}, radius_m: 60}
""")
    async with fleet_rig(mosquitto, config, tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        vin, session = rig.cars[0].vin, rig.session(0)
        into = ScenarioStep(at=0, do=ScenarioAction.DRIVE_TO, cars=("leon[0]",),
                            params={"lat": 41.3990, "lon": 2.1700, "speed_kmh": 100})
        await rig.faults.apply_step(into)
        await rig.advance_until(lambda: rig.faults.car(vin).zone is not None, limit=120)
        await rig.inbox.wait_for(f"tcu/{vin}/connection", b"offline", timeout=WAIT)
        await rig.advance(5)
        assert not session.online
        assert not session.vehicle.moving  # it parked in there
        out = into.model_copy(update={"params": {"lat": 41.3900, "lon": 2.1700, "speed_kmh": 100}})
        await rig.faults.apply_step(out)
        await rig.advance_until(lambda: session.online, limit=60)
        whats = [i.what for i in rig.faults.log.entries if i.target == vin]
        assert whats == ["drive_to", "enters underground_parking 'Aparcament'", "drive_to", "leaves 'Aparcament'"]


async def test_an_offline_profile_keeps_cars_away_until_the_outage_ends(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = fleet(BASE.replace("{name: leon, count: 2", "{name: leon, count: 1") + """
  - {name: remote, count: 1, model: ateca, equipment: radio, connectivity: {profile: offline, outage_s: 20s}}
""")
    async with fleet_rig(mosquitto, config, tmp_path) as rig:
        await rig.session(0).wait_online(WAIT)
        remote = rig.session(1)
        assert rig.faults.car(remote.vin).offline
        await rig.advance(15)
        assert not remote.online
        await rig.advance_until(lambda: remote.online, limit=20)
        assert remote.stats.connects == 1


async def test_weak_signal_and_clock_skew_show_in_what_the_car_signs(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        vin, session = rig.cars[0].vin, rig.session(0)
        car = rig.faults.car(vin)
        await car.apply(WeakSignalFault(signal_pct=7, drop_rate=0, duration_s=60), source="test")
        car.set_skew(3600)
        session.send_status(force=True)
        await rig.inbox.wait_until(lambda _: any(claims(t)["body"]["connection"]["signal_pct"] == 7
                                                 for t in rig.received(vin, "status")), timeout=WAIT)
        newest = claims(rig.received(vin, "status")[-1])
        assert newest["iat"] >= rig.clock.now() + 3599  # stamped by the car's clock, an hour ahead
        await rig.advance(61)
        assert session.signal_pct == 85  # the weak signal ended after its minute


async def test_group_transport_fault_goes_on_the_group_route_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = fleet(BASE)
    faults = FleetFaults.from_config(config, proxy=ProxyMode.GROUP, reconnect_jitter_s=1.0)
    async with fleet_rig(mosquitto, config, tmp_path, faults) as rig:
        await rig.runner.wait_all_online(WAIT)
        vins = [car.vin for car in rig.cars]
        applied = asyncio.Event()
        faults.log.listeners.append(lambda _: applied.set())
        await _operator_send(rig, vins, LatencyFault(latency_ms=40, scope=Scope.GROUP, duration_s=10))
        async with asyncio.timeout(WAIT):
            await applied.wait()
        assert isinstance(faults.backend, FaultProxy)
        route = faults.backend.route("leon")
        assert [t.kind for t in route.toxics] == [FaultKind.LATENCY]
        assert route.stats.connections == 2  # both cars came in through the group's route
        assert [i.target for i in faults.log.entries] == ["route:leon"]
        rig.session(0).send_status(force=True)  # still flows, 40 ms later
        await rig.inbox.wait_until(lambda _: len(rig.received(vins[0], "status")) >= 2, timeout=WAIT)
        await rig.advance(11)
        assert route.toxics == []


async def test_transport_faults_through_a_toxiproxy_server(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    fake = FakeToxiproxy()
    async with fake.running() as url:
        config = fleet(BASE)
        faults = FleetFaults.from_config(config, proxy=ProxyMode.CAR, backend=ToxiproxyClient(url))
        async with fleet_rig(mosquitto, config, tmp_path, faults) as rig:
            await rig.runner.wait_all_online(WAIT)  # through Toxiproxy's listeners
            vin = rig.cars[0].vin
            assert set(fake.proxies) == {f"tcu-sim-{car.vin}" for car in rig.cars}
            await faults.car(vin).apply(LatencyFault(latency_ms=30), source="test")
            assert set(fake.toxics[f"tcu-sim-{vin}"]) == {"tcu-sim-latency-upstream", "tcu-sim-latency-downstream"}
            rig.session(0).send_status(force=True)
            await rig.inbox.wait_until(lambda _: len(rig.received(vin, "status")) >= 2, timeout=WAIT)


async def test_transport_faults_without_a_proxy_are_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        applied = await rig.faults.car(rig.cars[0].vin).apply(LatencyFault(latency_ms=5), source="test")
        assert not applied
        (injection,) = rig.faults.log.entries
        assert injection.refused is not None
        assert "no fault proxy" in injection.refused


async def test_broker_faults_through_the_control_socket(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with fleet_rig(mosquitto, fleet(BASE), tmp_path) as rig:
        await rig.runner.wait_all_online(WAIT)
        path = tmp_path / "broker.sock"
        async with BrokerControl(mosquitto, path) as control:
            assert (path.stat().st_mode & 0o777) == 0o600
            assert (await broker_control(path, "kill"))["running"] is False
            for car in rig.cars:
                await rig.runner.sessions[car.vin].wait_offline(WAIT)
            with pytest.raises(BrokerControlError, match="action must be one of"):
                await broker_control(path, "explode")
            assert (await broker_control(path, "start"))["running"] is True
            await rig.runner.wait_all_online(WAIT)
            assert (await broker_control(path, "status"))["running"] is True
            with pytest.raises(BrokerControlError, match="already running"):
                await broker_control(path, "start")
            assert control.requests == 4
    with pytest.raises(BrokerControlError, match="no broker control socket"):
        await broker_control(path, "status")
