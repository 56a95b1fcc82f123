"""Time passing: heater/ventilation timers, 12 V battery draw and recovery, and step-size independence."""

from __future__ import annotations

import pytest
from vehicle_testkit import T0, make_car, state_of

from tcu_sim.protocol import AuxHeatingParams, CommandOp, EventType, FailureReason, VentilationParams
from tcu_sim.vehicle import BATTERY_LOW_V, IDLE_TICK_S, VehicleError


def test_heater_stops_by_itself_after_its_duration() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=20), T0)

    assert car.advance(T0 + 20 * 60 - 1) == []
    assert car.aux_remaining_s(T0 + 20 * 60 - 1) == 1
    assert car.snapshot(T0 + 20 * 60 - 1, online=True, signal_pct=50).aux_heating.remaining_min == 1

    (event,) = car.advance(T0 + 3600)  # asked late: the event still carries the moment it finished
    assert (event.type, event.at, event.detail) == (EventType.AUX_HEATING_FINISHED, T0 + 20 * 60, "duration elapsed")
    assert car.aux_remaining_s(T0 + 3600) == 0
    assert car.advance(T0 + 7200) == []


def test_ventilation_stops_by_itself() -> None:
    car = make_car()
    car.execute(CommandOp.VENTILATION_START, VentilationParams(duration_min=10), T0)
    (event,) = car.advance(T0 + 601)
    assert (event.type, event.at) == (EventType.VENTILATION_FINISHED, T0 + 600)


def test_remaining_minutes_count_down() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=30), T0)
    minutes = [car.snapshot(T0 + s, online=True, signal_pct=50).aux_heating.remaining_min for s in (0, 59, 60, 61)]
    assert minutes == [30, 30, 29, 29]


def test_heater_draws_the_12v_battery() -> None:
    car = make_car(battery_12v_v=12.6)
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=30), T0)
    car.advance(T0 + 30 * 60)
    assert car.battery_12v_v == pytest.approx(12.6 - 0.012 * 30)


def test_battery_recovers_slowly_when_nothing_runs_and_faster_with_the_ignition_on() -> None:
    car = make_car(battery_12v_v=12.0)
    car.advance(T0 + 3600)
    assert car.battery_12v_v == pytest.approx(12.06)
    car.control("ignition_on", {}, T0 + 3600)
    car.advance(T0 + 3600 + 600)
    assert car.battery_12v_v == pytest.approx(12.56)
    car.advance(T0 + 7 * 3600)
    assert car.battery_12v_v == pytest.approx(12.7)  # charged, not overcharged


def test_a_long_heater_run_on_a_weak_battery_ends_in_battery_low() -> None:
    car = make_car(battery_12v_v=12.1)
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=60), T0)

    events = car.advance(T0 + 3600)

    crossing = T0 + (12.1 - BATTERY_LOW_V) / 0.012 * 60  # 25 minutes in
    assert [(e.type, e.detail or e.warning) for e in events] == [
        (EventType.BATTERY_LOW, "12 V battery at 11.80 V"),
        (EventType.AUX_HEATING_FINISHED, "battery_low"),
        (EventType.HEALTH_WARNING, "battery_12v_low"),  # the health report's new warning, once
    ]
    assert [e.at for e in events] == pytest.approx([crossing] * 3)
    assert car.aux_remaining_s(T0 + 3600) == 0
    assert "battery_12v_low" in car.snapshot(T0 + 3600, online=True, signal_pct=50).health.warnings

    outcome = car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0 + 3600)
    assert car.battery_12v_v > BATTERY_LOW_V  # recovering, but not enough yet
    assert outcome.reason is FailureReason.BATTERY_LOW


def test_result_does_not_depend_on_how_often_time_is_asked() -> None:
    coarse, fine = make_car(battery_12v_v=12.3), make_car(battery_12v_v=12.3)
    for car in (coarse, fine):
        car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=60), T0)
    coarse_events = coarse.advance(T0 + 5000)
    fine_events = [e for s in range(0, 5001, 7) for e in fine.advance(T0 + s)] + fine.advance(T0 + 5000)
    assert [e.type for e in fine_events] == [e.type for e in coarse_events]
    assert [e.at for e in fine_events] == pytest.approx([e.at for e in coarse_events])
    assert fine.battery_12v_v == pytest.approx(coarse.battery_12v_v)


def test_time_never_runs_backwards() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0 + 100)
    before = state_of(car)
    assert car.advance(T0) == []
    assert state_of(car) == before


def test_events_of_a_failed_control_wait_for_the_next_call() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0)
    with pytest.raises(VehicleError):
        car.control("open_door", {"door": "trunk"}, T0 + 900)  # locked: refused, after time ran
    assert [e.type for e in car.advance(T0 + 900)] == [EventType.AUX_HEATING_FINISHED]


def test_time_events_come_first_in_a_command_outcome() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0)
    outcome = car.execute(CommandOp.UNLOCK, None, T0 + 900)
    assert [e.type for e in outcome.events] == [EventType.AUX_HEATING_FINISHED, EventType.UNLOCKED]


def test_next_tick_follows_what_runs() -> None:
    car = make_car()
    assert car.next_tick_s() == IDLE_TICK_S
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0)
    assert car.next_tick_s() == 60.0
    assert car.next_tick_s(T0 + 590) == pytest.approx(10.0)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -1.0])
def test_a_time_that_is_not_a_moment_is_refused(now: float) -> None:
    car = make_car()
    before = state_of(car)
    with pytest.raises(VehicleError, match="finite, non-negative"):
        car.advance(now)
    with pytest.raises(VehicleError, match="finite, non-negative"):
        car.control("lights_on", {}, now)
    assert state_of(car) == before


def test_revision_grows_with_the_heater_countdown() -> None:
    car = make_car(battery_12v_v=12.55)  # 30 s of heating stays within the same 0.1 V step
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10), T0)
    revision = car.revision
    car.advance(T0 + 30)
    assert car.revision == revision  # still 10 minutes shown
    car.advance(T0 + 61)
    assert car.revision > revision
