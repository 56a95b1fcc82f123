"""Remote commands: what succeeds, every refusal with its reason, and that a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from vehicle_testkit import T0, make_car, state_of, unlocked

from tcu_sim.protocol import (
    AuxHeatingParams,
    AuxState,
    CommandOp,
    EmptyParams,
    EventType,
    FailureReason,
    HonkMode,
    HonkParams,
    NotifyParams,
    PrivacyMode,
    VentilationParams,
)
from tcu_sim.vehicle import MAX_NOTIFICATIONS, InvalidCommand, Vehicle, VehicleError

HEAT = AuxHeatingParams(duration_min=30, target_temperature_c=21.5)
VENT = VentilationParams(duration_min=20)

# How to put a car into a state, by control (what a person does), at T0.
Setup = Callable[[Vehicle], object]


def _door_open(door: str) -> Setup:
    return lambda v: (unlocked(v), v.control("open_door", {"door": door}, T0))


def _ignition_on(v: Vehicle) -> None:
    v.control("ignition_on", {}, T0)


def _moving(v: Vehicle) -> None:
    v.control("drive_to", {"lat": 41.40, "lon": 2.19}, T0)


def _privacy(mode: str) -> Setup:
    return lambda v: v.control("set_privacy", {"mode": mode}, T0)


def _battery(volts: float) -> Setup:
    return lambda v: v.control("set_battery", {"voltage": volts}, T0)


REFUSALS: list[tuple[str, str, str, Setup, CommandOp, Any, FailureReason]] = [
    ("lock, front door open", "leon", "media_system", _door_open("front_left"), CommandOp.LOCK, None,
     FailureReason.DOOR_OPEN),
    ("lock, trunk open", "leon", "media_system", _door_open("trunk"), CommandOp.LOCK, None, FailureReason.DOOR_OPEN),
    ("lock, hood open", "born", "media_system", _door_open("hood"), CommandOp.LOCK, None, FailureReason.DOOR_OPEN),
    ("lock, moving", "leon", "media_system", _moving, CommandOp.LOCK, None, FailureReason.VEHICLE_MOVING),
    ("unlock, moving", "leon", "media_system", _moving, CommandOp.UNLOCK, None, FailureReason.VEHICLE_MOVING),
    ("lock, ignition on", "leon", "media_system", _ignition_on, CommandOp.LOCK, None, FailureReason.IGNITION_ON),
    ("unlock, ignition on", "leon", "media_system", _ignition_on, CommandOp.UNLOCK, None,
     FailureReason.IGNITION_ON),
    ("honk, moving", "leon", "media_system", _moving, CommandOp.HONK_AND_FLASH, HonkParams(),
     FailureReason.VEHICLE_MOVING),
    ("heater, ignition on", "leon", "media_system", _ignition_on, CommandOp.AUX_HEATING_START, HEAT,
     FailureReason.IGNITION_ON),
    ("heater, moving", "formentor", "navigation", _moving, CommandOp.AUX_HEATING_START, HEAT,
     FailureReason.VEHICLE_MOVING),
    ("heater, battery low", "leon", "media_system", _battery(11.7), CommandOp.AUX_HEATING_START, HEAT,
     FailureReason.BATTERY_LOW),
    ("heater on an electric car", "born", "media_system", lambda v: None, CommandOp.AUX_HEATING_START, HEAT,
     FailureReason.UNSUPPORTED_BY_VEHICLE),
    ("heater stop on an electric car", "tavascan", "navigation", lambda v: None, CommandOp.AUX_HEATING_STOP, None,
     FailureReason.UNSUPPORTED_BY_VEHICLE),
    ("heater on the radio ateca", "ateca", "radio", lambda v: None, CommandOp.AUX_HEATING_START, HEAT,
     FailureReason.UNSUPPORTED_BY_VEHICLE),
    ("ventilation on the radio ateca", "ateca", "radio", lambda v: None, CommandOp.VENTILATION_START, VENT,
     FailureReason.UNSUPPORTED_BY_VEHICLE),
    ("ventilation, ignition on", "born", "media_system", _ignition_on, CommandOp.VENTILATION_START, VENT,
     FailureReason.IGNITION_ON),
    ("ventilation, moving", "terramar", "media_system", _moving, CommandOp.VENTILATION_START, VENT,
     FailureReason.VEHICLE_MOVING),
    ("ventilation, battery low", "ateca", "navigation", _battery(11.5), CommandOp.VENTILATION_START, VENT,
     FailureReason.BATTERY_LOW),
    ("ventilation, max privacy", "leon", "media_system", _privacy("max"), CommandOp.VENTILATION_START, VENT,
     FailureReason.PRIVACY_MODE),
    ("lock, max privacy", "leon", "media_system", _privacy("max"), CommandOp.LOCK, None,
     FailureReason.PRIVACY_MODE),
    ("refresh, max privacy", "leon", "media_system", _privacy("max"), CommandOp.STATUS_REFRESH, None,
     FailureReason.PRIVACY_MODE),
    ("notify, max privacy", "leon", "media_system", _privacy("max"), CommandOp.INFOTAINMENT_NOTIFY,
     NotifyParams(message="hello"), FailureReason.PRIVACY_MODE),
]


@pytest.mark.parametrize(
    ("model", "equipment", "setup", "op", "params", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSALS],
)
def test_refused_command_fails_with_its_reason_and_changes_nothing(
    model: str, equipment: str, setup: Setup, op: CommandOp, params: Any, reason: FailureReason
) -> None:
    car = make_car(model, equipment)
    setup(car)
    car.advance(T0)
    before = state_of(car)

    outcome = car.execute(op, params, T0)

    assert (outcome.succeeded, outcome.reason) == (False, reason)
    assert outcome.detail
    assert outcome.events == ()
    assert state_of(car) == before


def test_lock_refusal_names_the_open_doors() -> None:
    car = unlocked(make_car())
    car.control("open_door", {"door": "trunk"}, T0)
    car.control("open_door", {"door": "rear_right"}, T0)
    outcome = car.execute(CommandOp.LOCK, EmptyParams(), T0)
    assert outcome.detail == "open: rear_right, trunk"


def test_no_position_privacy_still_allows_remote_services() -> None:
    car = make_car()
    car.control("set_privacy", {"mode": "no_position"}, T0)
    assert car.execute(CommandOp.UNLOCK, None, T0).succeeded


def test_lock_and_unlock() -> None:
    car = unlocked(make_car())
    revision = car.revision
    outcome = car.execute(CommandOp.LOCK, EmptyParams(), T0 + 1)
    assert outcome.succeeded
    assert [e.type for e in outcome.events] == [EventType.LOCKED]
    assert car.locked
    assert car.revision > revision

    outcome = car.execute(CommandOp.UNLOCK, {}, T0 + 2)
    assert [e.type for e in outcome.events] == [EventType.UNLOCKED]
    assert not car.locked


def test_locking_a_locked_car_succeeds_without_change() -> None:
    car = make_car()
    before = state_of(car)
    outcome = car.execute(CommandOp.LOCK, None, T0)
    assert outcome.succeeded
    assert outcome.events == ()
    assert state_of(car) == before


def test_lock_with_a_window_open_is_allowed() -> None:
    car = unlocked(make_car())
    car.control("open_window", {"window": "front_left"}, T0)
    assert car.execute(CommandOp.LOCK, None, T0).succeeded


def test_honk_and_status_refresh_succeed_and_change_nothing() -> None:
    car = make_car()
    before = state_of(car)
    assert car.execute(CommandOp.HONK_AND_FLASH, HonkParams(mode=HonkMode.FLASH, duration_s=5), T0).succeeded
    assert car.execute(CommandOp.STATUS_REFRESH, EmptyParams(), T0).succeeded
    assert state_of(car) == before


def test_heater_start_and_stop() -> None:
    car = make_car()
    outcome = car.execute(CommandOp.AUX_HEATING_START, HEAT, T0)
    assert outcome.succeeded
    assert [e.type for e in outcome.events] == [EventType.AUX_HEATING_STARTED]
    snap = car.snapshot(T0, online=True, signal_pct=80).aux_heating
    assert (snap.state, snap.remaining_min, snap.target_temperature_c) == (AuxState.HEATING, 30, 21.5)

    outcome = car.execute(CommandOp.AUX_HEATING_STOP, None, T0 + 60)
    assert [(e.type, e.detail) for e in outcome.events] == [(EventType.AUX_HEATING_FINISHED, "stopped")]
    snap = car.snapshot(T0 + 60, online=True, signal_pct=80).aux_heating
    assert (snap.state, snap.remaining_min, snap.target_temperature_c) == (AuxState.OFF, 0, None)


def test_stopping_what_is_not_running_succeeds_quietly() -> None:
    car = make_car()
    car.execute(CommandOp.VENTILATION_START, VENT, T0)
    before = state_of(car)
    outcome = car.execute(CommandOp.AUX_HEATING_STOP, None, T0)
    assert outcome.succeeded
    assert outcome.events == ()
    assert state_of(car) == before


def test_heating_replaces_ventilation() -> None:
    car = make_car()
    car.execute(CommandOp.VENTILATION_START, VENT, T0)
    outcome = car.execute(CommandOp.AUX_HEATING_START, HEAT, T0 + 10)
    assert [e.type for e in outcome.events] == [EventType.VENTILATION_FINISHED, EventType.AUX_HEATING_STARTED]
    assert car.aux_state is AuxState.HEATING


def test_restarting_the_heater_takes_the_new_duration() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, HEAT, T0)
    car.execute(CommandOp.AUX_HEATING_START, AuxHeatingParams(duration_min=10, target_temperature_c=25), T0 + 60)
    assert car.aux_remaining_s(T0 + 60) == 600
    assert car.snapshot(T0 + 60, online=True, signal_pct=1).aux_heating.target_temperature_c == 25


def test_electric_car_ventilates_from_its_traction_battery() -> None:
    car = make_car("born", "media_system", fuel_level_pct=50.0)
    assert car.execute(CommandOp.VENTILATION_START, VENT, T0).succeeded
    car.advance(T0 + 20 * 60)
    assert car.battery_12v_v >= 12.6  # the 12 V battery is not drawn
    assert car.fuel_level_pct == pytest.approx(50.0 - 100 * (2.0 * 20 / 60) / 58.0)  # 2 kW, 20 min, 58 kWh


def test_electric_car_with_an_almost_empty_battery_refuses_ventilation() -> None:
    car = make_car("born", "media_system", fuel_level_pct=3.0)
    outcome = car.execute(CommandOp.VENTILATION_START, VENT, T0)
    assert outcome.reason is FailureReason.BATTERY_LOW


def test_notification_is_stored_and_shown() -> None:
    car = make_car()
    outcome = car.execute(CommandOp.INFOTAINMENT_NOTIFY, NotifyParams(message="You are the primary user"), T0)
    assert [(e.type, e.message) for e in outcome.events] == [
        (EventType.NOTIFICATION_SHOWN, "You are the primary user")
    ]
    assert car.notifications == ("You are the primary user",)


def test_notifications_keep_only_the_latest() -> None:
    car = make_car()
    for i in range(MAX_NOTIFICATIONS + 5):
        car.execute(CommandOp.INFOTAINMENT_NOTIFY, {"message": f"m{i}"}, T0)
    assert len(car.notifications) == MAX_NOTIFICATIONS
    assert car.notifications[-1] == f"m{MAX_NOTIFICATIONS + 4}"


@pytest.mark.parametrize(
    ("op", "params", "match"),
    [
        ("open_sunroof", None, "unknown command op 'open_sunroof'"),
        (CommandOp.AUX_HEATING_START, {"duration_min": 5}, "aux_heating.start: params.duration_min"),
        (CommandOp.AUX_HEATING_START, VENT, "params must be AuxHeatingParams"),
        (CommandOp.LOCK, {"force": True}, "lock: params.force"),
        (CommandOp.INFOTAINMENT_NOTIFY, {}, "params.message"),
    ],
)
def test_bad_command_parameters_raise_invalid_command(op: Any, params: Any, match: str) -> None:
    car = make_car()
    before = state_of(car)
    with pytest.raises(InvalidCommand, match=match) as info:
        car.execute(op, params, T0)
    assert isinstance(info.value, VehicleError)
    assert isinstance(info.value, ValueError)
    assert state_of(car) == before


def test_command_string_op_and_mapping_params_are_accepted() -> None:
    car = make_car()
    outcome = car.execute("aux_heating.start", {"duration_min": 10, "target_temperature_c": 18.5}, T0)
    assert outcome.succeeded
    assert car.aux_remaining_s(T0) == 600


def test_privacy_max_check_comes_first() -> None:
    car = make_car("born", "media_system")
    car.control("set_privacy", {"mode": PrivacyMode.MAX}, T0)
    assert car.execute(CommandOp.AUX_HEATING_START, HEAT, T0).reason is FailureReason.PRIVACY_MODE
