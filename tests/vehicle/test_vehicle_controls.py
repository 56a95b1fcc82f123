"""What a person does at the car (simulator control): effects, events, refusals and bad parameters."""

from __future__ import annotations

from typing import Any

import pytest
from vehicle_testkit import T0, make_car, state_of, unlocked

from tcu_sim.protocol import (
    AuxState,
    CommandOp,
    ControlAction,
    DoorName,
    EventType,
    FailureReason,
    PrivacyMode,
    WindowName,
)
from tcu_sim.vehicle import ControlRefused, InvalidControl, VehicleError


def test_doors_open_and_close_with_events() -> None:
    car = unlocked(make_car())
    events = car.control("open_door", {"door": "trunk"}, T0)
    assert [(e.type, e.door) for e in events] == [(EventType.DOOR_OPENED, DoorName.TRUNK)]
    assert car.open_doors == (DoorName.TRUNK,)
    assert car.snapshot(T0, online=True, signal_pct=50).doors.trunk.open

    events = car.control(ControlAction.CLOSE_DOOR, {"door": DoorName.TRUNK}, T0)
    assert [(e.type, e.door) for e in events] == [(EventType.DOOR_CLOSED, DoorName.TRUNK)]
    assert not car.open_doors


def test_opening_an_open_door_or_closing_a_closed_one_does_nothing() -> None:
    car = unlocked(make_car())
    car.control("open_door", {"door": "hood"}, T0)
    before = state_of(car)
    assert car.control("open_door", {"door": "hood"}, T0) == []
    assert car.control("close_door", {"door": "front_left"}, T0) == []
    assert state_of(car) == before


def test_a_locked_door_cannot_be_opened() -> None:
    car = make_car()
    before = state_of(car)
    with pytest.raises(ControlRefused, match="locked"):
        car.control("open_door", {"door": "front_left"}, T0)
    assert state_of(car) == before


def test_windows_open_and_close() -> None:
    car = make_car()
    car.control("open_window", {"window": "rear_left"}, T0)
    assert car.open_windows == (WindowName.REAR_LEFT,)
    assert car.snapshot(T0, online=True, signal_pct=50).windows.rear_left == "open"
    car.control("close_window", {"window": "rear_left"}, T0)
    assert not car.open_windows


@pytest.mark.parametrize("door", list(DoorName))
def test_key_lock_fails_with_any_door_open(door: DoorName) -> None:
    car = unlocked(make_car())
    car.control("open_door", {"door": door}, T0)
    before = state_of(car)
    with pytest.raises(ControlRefused, match=f"open: {door.value}") as info:
        car.control("lock_key", {}, T0)
    assert info.value.reason is FailureReason.DOOR_OPEN
    assert state_of(car) == before


def test_key_lock_and_unlock() -> None:
    car = unlocked(make_car())
    assert [e.type for e in car.control("lock_key", None, T0)] == [EventType.LOCKED]
    assert car.locked
    assert [e.type for e in car.control("unlock_key", {}, T0)] == [EventType.UNLOCKED]
    assert not car.locked


def test_key_lock_with_the_ignition_on_is_refused() -> None:
    car = unlocked(make_car())
    car.control("ignition_on", {}, T0)
    with pytest.raises(ControlRefused) as info:
        car.control("lock_key", {}, T0)
    assert info.value.reason is FailureReason.IGNITION_ON


def test_ignition_on_stops_the_heater() -> None:
    car = make_car()
    car.execute(CommandOp.AUX_HEATING_START, {"duration_min": 30}, T0)
    events = car.control("ignition_on", {}, T0 + 60)
    assert [(e.type, e.detail) for e in events] == [
        (EventType.AUX_HEATING_FINISHED, "ignition_on"),
        (EventType.IGNITION_ON, None),
    ]
    assert car.aux_state is AuxState.OFF
    assert car.ignition_on


def test_ignition_off_while_moving_is_refused() -> None:
    car = make_car()
    car.control("drive_to", {"lat": 41.41, "lon": 2.17}, T0)
    with pytest.raises(ControlRefused) as info:
        car.control("ignition_off", {}, T0 + 10)
    assert info.value.reason is FailureReason.VEHICLE_MOVING
    assert car.ignition_on


def test_privacy_changes_with_an_event() -> None:
    car = make_car()
    events = car.control("set_privacy", {"mode": "no_position"}, T0)
    assert [(e.type, e.privacy_mode) for e in events] == [(EventType.PRIVACY_CHANGED, PrivacyMode.NO_POSITION)]
    assert car.control("set_privacy", {"mode": "no_position"}, T0) == []


def test_max_privacy_keeps_everything_but_ecall_and_privacy_changes_in_the_car() -> None:
    car = make_car()
    car.control("set_privacy", {"mode": "max"}, T0)
    assert not car.sends_status()
    assert car.control("unlock_key", {}, T0) == []  # the car unlocks, but tells nobody
    assert not car.locked
    ecall = car.control("ecall", {}, T0)
    assert [e.type for e in ecall] == [EventType.ECALL]
    assert ecall[0].position is not None  # the law wants the position in an emergency call
    events = car.control("set_privacy", {"mode": "off"}, T0)
    assert [e.type for e in events] == [EventType.PRIVACY_CHANGED]
    assert car.sends_status()


def test_ecall_carries_the_position_even_with_no_position_privacy() -> None:
    car = make_car()
    car.control("set_privacy", {"mode": "no_position"}, T0)
    (event,) = car.control("ecall", {}, T0)
    assert event.position is not None
    assert (event.position.lat, event.position.lon) == pytest.approx(car.position)


def test_pairing_code_on_the_radio_ateca() -> None:
    car = make_car("ateca", "radio")
    (event,) = car.control("enter_pairing_code", {"code": "12345678"}, T0)
    assert (event.type, event.pairing_code) == (EventType.PAIRING_CODE_ENTERED, "12345678")
    assert "12345678" not in repr(event)


@pytest.mark.parametrize("code", ["1234567", "123456789", "abcdefgh", 12345678, None])
def test_malformed_pairing_codes_are_refused_without_echo(code: Any) -> None:
    car = make_car("ateca", "radio")
    with pytest.raises(InvalidControl, match="code must be 8 digits") as info:
        car.control("enter_pairing_code", {"code": code}, T0)
    assert str(code) not in str(info.value) or code is None


def test_pairing_code_on_a_tkov_car_and_tkov_on_the_radio_ateca_are_refused() -> None:
    with pytest.raises(ControlRefused, match="enrols by tkov") as info:
        make_car("leon").control("enter_pairing_code", {"code": "12345678"}, T0)
    assert info.value.reason is FailureReason.UNSUPPORTED_BY_VEHICLE
    with pytest.raises(ControlRefused, match="enrols by pairing_code"):
        make_car("ateca", "radio").control("tkov", {}, T0)


def test_tkov_needs_both_keys() -> None:
    car = make_car("formentor")
    assert [e.type for e in car.control("tkov", {}, T0)] == [EventType.TKOV_COMPLETED]
    with pytest.raises(ControlRefused, match="both keys"):
        car.control("tkov", {"keys": 1}, T0)


def test_enrolment_steps_are_refused_in_max_privacy() -> None:
    car = make_car("ateca", "radio")
    car.control("set_privacy", {"mode": "max"}, T0)
    with pytest.raises(ControlRefused) as info:
        car.control("enter_pairing_code", {"code": "12345678"}, T0)
    assert info.value.reason is FailureReason.PRIVACY_MODE


def test_infotainment_login_carries_the_credentials_but_never_shows_the_password() -> None:
    car = make_car("born")
    (event,) = car.control("infotainment_login", {"email": "ana@example.com", "password": "s3cret-pw"}, T0)
    assert (event.type, event.email) == (EventType.INFOTAINMENT_LOGIN, "ana@example.com")
    assert event.password is not None
    assert event.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(event)
    assert event.model_dump(mode="json")["password"] == "s3cret-pw"  # in clear only in the signed body
    assert car.infotainment_user == "ana@example.com"


def test_infotainment_login_needs_a_user_menu() -> None:
    with pytest.raises(ControlRefused, match="no user menu") as info:
        make_car("ateca", "radio").control("infotainment_login", {"email": "a@b.cd", "password": "x"}, T0)
    assert info.value.reason is FailureReason.UNSUPPORTED_BY_VEHICLE


def test_bad_password_is_refused_without_echo() -> None:
    car = make_car()
    with pytest.raises(InvalidControl) as info:
        car.control("infotainment_login", {"email": "a@b.cd", "password": "x" * 1025}, T0)
    assert "xxx" not in str(info.value)


def test_factory_reset_clears_personal_state() -> None:
    car = make_car()
    car.control("infotainment_login", {"email": "ana@example.com", "password": "pw"}, T0)
    car.execute(CommandOp.INFOTAINMENT_NOTIFY, {"message": "hi"}, T0)
    car.control("set_privacy", {"mode": "max"}, T0)

    events = car.control("factory_reset", {}, T0 + 1)

    assert [e.type for e in events] == [EventType.FACTORY_RESET, EventType.PRIVACY_CHANGED]
    assert car.privacy_mode is PrivacyMode.OFF
    assert car.notifications == ()
    assert car.infotainment_user is None
    assert car.sends_status()


def test_lights() -> None:
    car = make_car()
    revision = car.revision
    car.control("lights_on", {}, T0)
    assert car.snapshot(T0, online=True, signal_pct=9).lights == "on"
    assert car.revision > revision
    car.control("lights_off", {}, T0)
    assert car.snapshot(T0, online=True, signal_pct=9).lights == "off"


def test_set_battery_below_the_mark_reports_battery_low_once() -> None:
    car = make_car()
    events = car.control("set_battery", {"voltage": 11.6}, T0)
    assert [(e.type, e.warning) for e in events] == [
        (EventType.BATTERY_LOW, None), (EventType.HEALTH_WARNING, "battery_12v_low")
    ]
    assert car.control("set_battery", {"voltage": 11.5}, T0) == []
    car.control("set_battery", {"voltage": 12.5}, T0)  # re-arms
    again = car.control("set_battery", {"voltage": 11.0}, T0)
    assert [e.type for e in again] == [EventType.BATTERY_LOW, EventType.HEALTH_WARNING]


def test_faults_are_not_the_vehicle_models_business() -> None:
    with pytest.raises(InvalidControl, match="fault layer"):
        make_car().control("fault", {"kind": "offline"}, T0)


@pytest.mark.parametrize(
    ("action", "params", "match"),
    [
        ("teleport", {}, "teleport: unknown action"),
        ("open_door", {}, "missing parameter 'door'"),
        ("open_door", {"door": "sunroof"}, "door must be one of: front_left"),
        ("open_door", {"door": "trunk", "force": 1}, "unknown parameter"),
        ("open_window", {"window": "trunk"}, "window must be one of"),
        ("drive_to", {"lat": 91, "lon": 0}, "lat must be between"),
        ("drive_to", {"lat": "41", "lon": 2}, "lat must be a number, got str"),
        ("drive_to", {"lat": True, "lon": 2}, "lat must be a number, got bool"),
        ("drive_to", {"lat": float("nan"), "lon": 2}, "lat must be between"),
        ("drive_to", {"lat": 41, "lon": 2, "speed_kmh": 400}, "speed_kmh must be between"),
        ("set_privacy", {"mode": "paranoid"}, "mode must be one of: off, no_position, max"),
        ("set_battery", {"voltage": -1}, "voltage must be between"),
        ("tkov", {"keys": 3}, "keys must be between"),
        ("infotainment_login", {"email": "no-at-sign", "password": "pw"}, "email must be an e-mail address"),
        ("lock_key", {"force": True}, "unknown parameter"),
        ("ecall", [1, 2], "params must be an object"),
    ],
)
def test_bad_controls_raise_invalid_control_and_change_nothing(action: str, params: Any, match: str) -> None:
    car = unlocked(make_car())
    before = state_of(car)
    with pytest.raises(InvalidControl, match=match) as info:
        car.control(action, params, T0)
    assert isinstance(info.value, VehicleError)
    assert isinstance(info.value, ValueError)
    assert state_of(car) == before


def test_control_errors_are_caught_as_value_errors_by_callers() -> None:
    # The TCU session catches ValueError around control(): every refusal must be one.
    assert issubclass(ControlRefused, InvalidControl)
    assert issubclass(InvalidControl, ValueError)
