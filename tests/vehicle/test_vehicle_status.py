"""Status snapshots (SPEC §2.4), privacy, the change indicator, creation from a seed, and memory per car."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from vehicle_testkit import HOME, T0, make_car, unlocked

from tcu_sim.protocol import (
    CommandOp,
    DoorName,
    OnOff,
    Position,
    PrivacyMode,
    StatusSnapshot,
    decode_json,
    encode_json,
    generate_vin,
)
from tcu_sim.vehicle import UnsupportedConfiguration, Vehicle, VehicleError


def test_snapshot_of_a_new_car_is_complete_and_valid() -> None:
    car = make_car(battery_12v_v=12.55, fuel_level_pct=40.0, odometer_km=12_345.67)
    status = car.snapshot(T0 + 5, online=True, signal_pct=77)

    # It survives the JSON round trip the wire does.
    assert StatusSnapshot.model_validate(decode_json(encode_json(status.model_dump(mode="json")))) == status
    assert status.updated_at == T0 + 5
    assert (status.connection.online, status.connection.signal_pct) == (True, 77)
    assert (status.privacy_mode, status.ignition, status.moving, status.locked) == ("off", "off", False, True)
    assert [(status.doors.get(d).open, status.doors.get(d).locked) for d in DoorName] == [(False, True)] * 6
    assert status.windows.front_left == "closed"
    assert status.lights is OnOff.OFF
    assert status.parking_position is not None
    assert (status.parking_position.lat, status.parking_position.lon) == (HOME.lat, HOME.lon)
    assert T0 - 12 * 3600 <= status.parking_position.parked_at <= T0
    assert (status.aux_heating.state, status.aux_heating.remaining_min) == ("off", 0)
    assert (status.battery_12v_v, status.fuel_level_pct, status.odometer_km) == (12.55, 40.0, 12_345.7)
    assert status.range_km == pytest.approx(40.0 * 50 / 5.8, abs=0.1)
    assert status.health.oil_service_due_km <= 15_000


def test_signal_is_clamped_to_a_percentage() -> None:
    car = make_car()
    assert car.snapshot(T0, online=False, signal_pct=150).connection.signal_pct == 100
    assert car.snapshot(T0, online=False, signal_pct=-3).connection.signal_pct == 0


@pytest.mark.parametrize(("mode", "visible"), [("off", True), ("no_position", False), ("max", False)])
def test_privacy_hides_the_parking_position(mode: str, visible: bool) -> None:
    car = make_car()
    car.control("set_privacy", {"mode": mode}, T0)
    status = car.snapshot(T0, online=True, signal_pct=50)
    assert (status.parking_position is not None) is visible
    assert status.privacy_mode == mode


def test_max_privacy_snapshot_exists_but_is_not_sent() -> None:
    car = make_car()
    assert car.sends_status()
    car.control("set_privacy", {"mode": PrivacyMode.MAX}, T0)
    assert car.snapshot(T0, online=True, signal_pct=50).privacy_mode is PrivacyMode.MAX
    assert not car.sends_status()


def test_locked_means_every_door_trunk_and_hood_locked() -> None:
    car = unlocked(make_car())
    status = car.snapshot(T0, online=True, signal_pct=50)
    assert not status.locked
    assert not status.doors.hood.locked


def test_revision_changes_only_with_the_state() -> None:
    car = make_car()
    revision = car.revision
    car.snapshot(T0, online=True, signal_pct=50)
    car.execute(CommandOp.STATUS_REFRESH, None, T0)
    car.execute(CommandOp.LOCK, None, T0)  # already locked
    assert car.revision == revision
    car.control("unlock_key", {}, T0)
    assert car.revision == revision + 1


def test_health_warnings_follow_the_state() -> None:
    car = make_car(fuel_level_pct=5.0, odometer_km=1000.0)
    warnings = car.snapshot(T0, online=True, signal_pct=50).health.warnings
    assert "fuel_low" in warnings
    born = make_car("born", fuel_level_pct=5.0)
    assert "charge_low" in born.snapshot(T0, online=True, signal_pct=50).health.warnings
    days = car.snapshot(T0, online=True, signal_pct=50).health.inspection_due_days
    later = car.snapshot(T0 + (days + 2) * 86_400, online=True, signal_pct=50).health
    assert later.inspection_due_days < 0
    assert "inspection_overdue" in later.warnings


def test_the_same_seed_gives_the_same_car_and_the_same_future() -> None:
    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        car = Vehicle.new(generate_vin(rng), "formentor", "navigation", HOME, rng, T0)
        car.execute(CommandOp.AUX_HEATING_START, {"duration_min": 45}, T0)
        car.control("drive_to", {"lat": 41.45, "lon": 2.25}, T0 + 3600)
        events = car.advance(T0 + 3 * 3600)
        return [car.snapshot(T0 + 3 * 3600, online=True, signal_pct=60).model_dump_json(), repr(car),
                *(e.model_dump_json() for e in events)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_creation_draws_a_fixed_amount_from_the_random_stream() -> None:
    # Overrides must not shift the stream, or every later car of a fleet would change.
    a, b = random.Random(5), random.Random(5)
    Vehicle.new("VSSZZZKJZRR000000", "leon", "media_system", HOME, a, T0)
    Vehicle.new("VSSZZZKJZRR000000", "born", "navigation", (41.0, 2.0), b, T0, battery_12v_v=11.0,
                fuel_level_pct=3.0, odometer_km=1.0)
    assert a.random() == b.random()


def test_creation_refuses_bad_input() -> None:
    rng = random.Random(1)
    with pytest.raises(UnsupportedConfiguration):
        Vehicle.new(generate_vin(rng), "born", "radio", HOME, rng, T0)
    with pytest.raises(VehicleError, match="vin"):
        Vehicle.new("NOT-A-VIN", "leon", "media_system", HOME, rng, T0)
    with pytest.raises(VehicleError, match="home"):
        Vehicle.new(generate_vin(rng), "leon", "media_system", (95.0, 0.0), rng, T0)
    with pytest.raises(VehicleError, match="battery_12v_v"):
        Vehicle.new(generate_vin(rng), "leon", "media_system", HOME, rng, T0, battery_12v_v=40)


def test_repr_shows_the_state() -> None:
    car = make_car()
    assert repr(car).startswith(f"<Vehicle {car.vin} leon/media_system locked parked aux=off battery=12.60V")


def test_ten_thousand_cars_fit_well_within_the_memory_budget() -> None:
    # SPEC P1: ≤ 50 KiB RSS per car for everything (connection, TLS, outbox...); the model must be a sliver of it.
    rng = random.Random(9)
    vins = [generate_vin(rng) for _ in range(2000)]
    tracemalloc.start()
    try:
        base = tracemalloc.take_snapshot()
        cars = [Vehicle.new(vin, "leon", "media_system", Position(lat=41.0, lon=2.0), rng, T0) for vin in vins]
        for car in cars[::10]:  # some with a little history
            car.execute(CommandOp.AUX_HEATING_START, {"duration_min": 20}, T0)
            car.advance(T0 + 120)
        used = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(base, "filename"))
    finally:
        tracemalloc.stop()
    per_car = used / len(cars)
    assert per_car < 2048, f"{per_car:.0f} bytes per car"
