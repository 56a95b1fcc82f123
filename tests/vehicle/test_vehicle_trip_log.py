"""The trip log (driving data and the samples alerts are checked on), health warnings, and the breakdown call."""

from __future__ import annotations

import itertools

import pytest
from vehicle_testkit import HOME, T0, make_car

from tcu_sim.protocol import MAX_TRIP_SAMPLES, TRIP_SAMPLE_S, Event, EventType, FailureReason, Trip
from tcu_sim.vehicle import ControlRefused
from tcu_sim.vehicle._geo import distance_km

DEST = (41.4036, 2.1744)
FAR = (41.60, 2.29)


def _trip(events: list[Event]) -> Trip:
    (trip,) = [e.trip for e in events if e.type is EventType.TRIP]
    assert trip is not None
    return trip


def test_a_trip_event_sums_the_drive_up_with_samples_every_few_seconds() -> None:
    car = make_car(fuel_level_pct=60.0, odometer_km=10_000.0)
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1], "speed_kmh": 50}, T0)
    km = distance_km(HOME.lat, HOME.lon, *DEST)
    arrival = T0 + km / 50 * 3600
    trip = _trip(car.advance(arrival + 60))

    assert (trip.started_at, trip.ended_at) == pytest.approx((T0, arrival))
    assert trip.start is not None
    assert trip.end is not None
    assert (trip.start.lat, trip.start.lon, trip.end.lat, trip.end.lon) == pytest.approx((HOME.lat, HOME.lon, *DEST))
    assert trip.distance_km == pytest.approx(km, abs=1e-3)
    assert trip.duration_s == pytest.approx(arrival - T0, abs=1e-3)
    assert (trip.average_speed_kmh, trip.max_speed_kmh) == pytest.approx((50.0, 50.0), abs=0.1)
    assert trip.energy_unit == "l"
    assert trip.energy_used == pytest.approx(km * car.capabilities.consumption_per_100km / 100, abs=1e-3)
    times = [s.at for s in trip.samples]
    assert times == sorted(times)
    assert all(b - a <= TRIP_SAMPLE_S + 1e-6 for a, b in itertools.pairwise(times))
    assert [s.speed_kmh for s in trip.samples[:-1]] == [50.0] * (len(trip.samples) - 1)
    assert trip.samples[-1].speed_kmh == 0.0  # parked
    assert all(s.lat is not None for s in trip.samples)


def test_a_rerouted_drive_is_one_trip_whose_samples_show_each_legs_speed() -> None:
    car = make_car()
    car.control("drive_to", {"lat": FAR[0], "lon": FAR[1], "speed_kmh": 140}, T0)
    car.advance(T0 + 60)
    car.control("drive_to", {"lat": HOME.lat, "lon": HOME.lon, "speed_kmh": 40}, T0 + 60)
    trip = _trip(car.advance(T0 + 3 * 3600))
    speeds = [s.speed_kmh for s in trip.samples]
    assert (speeds[0], speeds[-1]) == (140, 0)
    assert 40 in speeds
    assert trip.max_speed_kmh == 140
    assert trip.started_at == T0


def test_a_long_trip_keeps_at_most_the_sample_limit() -> None:
    car = make_car("tavascan", "navigation", fuel_level_pct=100.0)
    car.control("drive_to", {"lat": 42.5, "lon": 2.9, "speed_kmh": 100}, T0)
    trip = _trip(car.advance(T0 + 3 * 3600))
    assert 50 < len(trip.samples) <= MAX_TRIP_SAMPLES
    assert trip.energy_unit == "kWh"


def test_privacy_hides_trip_positions_and_maximum_privacy_sends_no_trip() -> None:
    car = make_car()
    car.control("set_privacy", {"mode": "no_position"}, T0)
    car.control("drive_to", {"lat": DEST[0], "lon": DEST[1]}, T0)
    trip = _trip(car.advance(T0 + 3600))
    assert (trip.start, trip.end) == (None, None)
    assert all(s.lat is None and s.lon is None for s in trip.samples)

    car.control("set_privacy", {"mode": "max"}, T0 + 3600)
    car.control("drive_to", {"lat": HOME.lat, "lon": HOME.lon}, T0 + 3600)
    assert [e for e in car.advance(T0 + 7200) if e.type is EventType.TRIP] == []


def test_a_new_health_warning_is_reported_once_until_it_goes_away() -> None:
    car = make_car(fuel_level_pct=10.5)
    car.control("drive_to", {"lat": FAR[0], "lon": FAR[1]}, T0)
    warnings = [e.warning for e in car.advance(T0 + 3600) if e.type is EventType.HEALTH_WARNING]
    assert warnings == ["fuel_low"]
    assert [e for e in car.advance(T0 + 7200) if e.type is EventType.HEALTH_WARNING] == []


def test_a_breakdown_call_carries_the_position_unless_privacy_hides_it() -> None:
    car = make_car()
    (call,) = car.control("breakdown_call", {}, T0)
    assert call.type is EventType.BREAKDOWN_CALL
    assert call.position is not None
    car.control("set_privacy", {"mode": "no_position"}, T0)
    (call,) = car.control("breakdown_call", {}, T0)
    assert call.position is None
    car.control("set_privacy", {"mode": "max"}, T0)
    with pytest.raises(ControlRefused) as refused:
        car.control("breakdown_call", {}, T0)
    assert refused.value.reason is FailureReason.PRIVACY_MODE
