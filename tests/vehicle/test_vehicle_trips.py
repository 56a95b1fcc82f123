"""Trips: a car driving from its parking place to another changes odometer, fuel and position, then parks."""

from __future__ import annotations

import pytest
from vehicle_testkit import HOME, T0, make_car, unlocked

from tcu_sim.protocol import EventType, FailureReason
from tcu_sim.vehicle import ControlRefused
from tcu_sim.vehicle._geo import distance_km, intermediate_point

DEST = (41.4036, 2.1744)  # Sagrada Família, about 2 km from HOME


def test_trip_moves_the_car_and_parks_it_at_the_destination() -> None:
    car = make_car(fuel_level_pct=60.0, odometer_km=10_000.0)
    km = distance_km(HOME.lat, HOME.lon, *DEST)
    assert 1.5 < km < 2.5

    events = car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)

    assert [e.type for e in events] == [EventType.UNLOCKED, EventType.IGNITION_ON, EventType.TRIP_STARTED]
    assert car.moving
    assert car.parked_at is None
    status = car.snapshot(T0, online=True, signal_pct=70)
    assert (status.moving, status.parking_position, status.ignition) == (True, None, "on")

    speed = car.average_speed_kmh  # the car's own city average, drawn at creation
    assert 40 <= speed <= 50
    arrival = T0 + km / speed * 3600

    halfway = car.advance(T0 + (arrival - T0) / 2)
    assert halfway == []
    assert car.odometer_km == pytest.approx(10_000 + km / 2)
    assert car.position == pytest.approx(intermediate_point(HOME.lat, HOME.lon, *DEST, 0.5))
    assert car.snapshot(T0 + 1, online=True, signal_pct=70).parking_position is None

    events = car.advance(arrival + 600)

    assert [e.type for e in events] == [EventType.PARKED, EventType.IGNITION_OFF, EventType.LOCKED, EventType.TRIP]
    assert all(e.at == pytest.approx(arrival) for e in events)
    assert events[0].position is not None
    assert (events[0].position.lat, events[0].position.lon) == pytest.approx(DEST)
    assert not car.moving
    assert car.locked  # the driver found it locked and locks it again
    assert car.odometer_km == pytest.approx(10_000 + km)
    assert car.fuel_level_pct == pytest.approx(60.0 - km * car.capabilities.pct_per_km)
    status = car.snapshot(arrival + 600, online=True, signal_pct=70)
    assert status.parking_position is not None
    assert (status.parking_position.lat, status.parking_position.lon) == pytest.approx(DEST)
    assert status.parking_position.parked_at == pytest.approx(arrival)
    assert (status.moving, status.ignition) == (False, "off")


def test_a_car_found_unlocked_is_left_unlocked() -> None:
    car = unlocked(make_car())
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1], "speed_kmh": 60}, T0)
    events = car.advance(T0 + 3600)
    assert [e.type for e in events] == [EventType.PARKED, EventType.IGNITION_OFF, EventType.TRIP]
    assert not car.locked


def test_speed_can_be_given() -> None:
    car = make_car()
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1], "speed_kmh": 100}, T0)
    (parked, *_) = car.advance(T0 + 3600)
    assert parked.at == pytest.approx(T0 + distance_km(HOME.lat, HOME.lon, *DEST) / 100 * 3600)


def test_an_electric_car_uses_its_charge() -> None:
    car = make_car("tavascan", "navigation", fuel_level_pct=80.0)
    car.control("drive_to", {"lat": 41.60, "lon": 2.29}, T0)
    car.advance(T0 + 6 * 3600)
    assert not car.moving
    assert car.fuel_level_pct < 80.0 - 5
    assert car.range_km == pytest.approx(car.fuel_level_pct * car.capabilities.max_range_km / 100)


def test_a_car_running_out_of_fuel_stops_where_it_is() -> None:
    car = make_car(fuel_level_pct=0.5)  # 50 l tank, 5.8 l/100 km: about 4.3 km left
    car.control("drive_to", {"lat": 41.60, "lon": 2.29}, T0)  # about 26 km away
    events = car.advance(T0 + 3 * 3600)
    assert (events[0].type, events[0].detail) == (EventType.PARKED, "out of fuel")
    assert not car.moving
    assert car.fuel_level_pct == 0.0
    assert car.odometer_km == pytest.approx(10_000 + 0.5 / car.capabilities.pct_per_km)
    with pytest.raises(ControlRefused, match="no fuel"):
        car.control("drive_to", {"lat": 41.0, "lon": 2.0}, T0 + 3 * 3600)


def test_a_new_destination_while_driving_reroutes_from_where_the_car_is() -> None:
    car = make_car()
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)
    car.advance(T0 + 60)
    here = car.position
    events = car.control("drive_to", {"lat": HOME.lat, "lon": HOME.lon}, T0 + 60)
    assert [e.type for e in events] == [EventType.TRIP_STARTED]
    assert events[0].position is not None
    assert (events[0].position.lat, events[0].position.lon) == pytest.approx(here, abs=1e-6)
    events = car.advance(T0 + 3600)
    assert [e.type for e in events] == [EventType.PARKED, EventType.IGNITION_OFF, EventType.LOCKED, EventType.TRIP]
    assert car.position == pytest.approx((HOME.lat, HOME.lon))


def test_no_driving_off_with_a_door_open() -> None:
    car = unlocked(make_car())
    car.control("open_door", {"door": "trunk"}, T0)
    with pytest.raises(ControlRefused) as info:
        car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)
    assert info.value.reason is FailureReason.DOOR_OPEN
    assert not car.moving


def test_doors_stay_shut_while_moving() -> None:
    car = make_car()
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)
    with pytest.raises(ControlRefused) as info:
        car.control("open_door", {"door": "front_left"}, T0 + 10)
    assert info.value.reason is FailureReason.VEHICLE_MOVING


def test_a_trip_to_where_the_car_already_is_parks_at_once() -> None:
    car = make_car()
    car.control("drive_to", {"lat": HOME.lat, "lon": HOME.lon}, T0)
    assert car.advance(T0)[0].type is EventType.PARKED
    assert car.parked_at == T0


def test_trip_positions_are_hidden_with_no_position_privacy() -> None:
    car = make_car()
    car.control("set_privacy", {"mode": "no_position"}, T0)
    (*_, started) = car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)
    (parked, *_) = car.advance(T0 + 3600)
    assert started.position is None
    assert parked.position is None
    assert car.snapshot(T0 + 3600, online=True, signal_pct=70).parking_position is None


def test_next_tick_while_driving_is_the_next_kilometre() -> None:
    car = make_car(odometer_km=10_000.5, fuel_level_pct=60.5)  # no whole percent of fuel either in 50 s
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1], "speed_kmh": 36}, T0)
    assert car.next_tick_s() == pytest.approx(50.0)  # 0.5 km at 10 m/s
    revision = car.revision
    car.advance(T0 + 49)
    assert car.revision == revision
    car.advance(T0 + 51)
    assert car.revision > revision
