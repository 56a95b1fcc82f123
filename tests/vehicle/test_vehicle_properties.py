"""Random sequences of controls, commands and time: only documented errors, and the invariants always hold."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from vehicle_testkit import HOME, T0, state_of

from tcu_sim.protocol import AuxState, CommandOp, ControlAction, DoorName, Event, PrivacyMode, WindowName
from tcu_sim.vehicle import Vehicle, VehicleError, VehicleModel, capabilities, valid_equipment

COMBINATIONS = [(m, e) for m in VehicleModel for e in sorted(valid_equipment(m))]

garbage = st.dictionaries(
    st.text(max_size=6), st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    max_size=3,
)
near = st.floats(-0.05, 0.05)  # short trips keep the test fast

CONTROL_PARAMS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "open_door": st.fixed_dictionaries({"door": st.sampled_from([*DoorName, "sunroof"])}),
    "close_door": st.fixed_dictionaries({"door": st.sampled_from([*DoorName, "sunroof"])}),
    "open_window": st.fixed_dictionaries({"window": st.sampled_from([*WindowName, "trunk"])}),
    "close_window": st.fixed_dictionaries({"window": st.sampled_from(list(WindowName))}),
    "drive_to": st.builds(
        lambda dlat, dlon, extra: {"lat": HOME.lat + dlat, "lon": HOME.lon + dlon, **extra},
        near,
        near,
        st.sampled_from([{}, {"speed_kmh": 90}, {"speed_kmh": 0}]),
    ),
    "set_privacy": st.fixed_dictionaries({"mode": st.sampled_from([*PrivacyMode, "paranoid"])}),
    "enter_pairing_code": st.fixed_dictionaries(
        {"code": st.one_of(st.from_regex(r"[0-9]{8}", fullmatch=True), st.text(max_size=9))}
    ),
    "tkov": st.one_of(st.just({}), st.fixed_dictionaries({"keys": st.integers(0, 3)})),
    "infotainment_login": st.fixed_dictionaries(
        {"email": st.sampled_from(["ana@example.com", "nope"]), "password": st.text(max_size=4)}
    ),
    "set_battery": st.fixed_dictionaries({"voltage": st.floats(10.5, 13.2)}),
}

COMMAND_PARAMS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "aux_heating.start": st.fixed_dictionaries(
        {"duration_min": st.integers(5, 65), "target_temperature_c": st.sampled_from([16, 21.5, 29.5, 30, 17.3])}
    ),
    "ventilation.start": st.fixed_dictionaries({"duration_min": st.integers(5, 65)}),
    "honk_and_flash": st.fixed_dictionaries(
        {"mode": st.sampled_from(["flash", "honk_and_flash", "siren"]), "duration_s": st.integers(0, 31)}
    ),
    "infotainment.notify": st.fixed_dictionaries({"message": st.text(max_size=12)}),
}


@st.composite
def controls(draw: st.DrawFn) -> tuple[str, str, Any]:
    action = draw(st.sampled_from([*(a.value for a in ControlAction), "teleport"]))
    params = draw(st.one_of(CONTROL_PARAMS.get(action, st.just({})), garbage) if draw(st.booleans()) else
                  CONTROL_PARAMS.get(action, st.just({})))
    return "control", action, params


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, str, Any]:
    op = draw(st.sampled_from([*(o.value for o in CommandOp), "self_destruct"]))
    params = draw(st.one_of(COMMAND_PARAMS.get(op, st.just({})), garbage))
    return "execute", op, params


# What people do most, drawn more often, so that multi-step paths (unlock → open a door → lock) are explored.
EVERYDAY: list[tuple[str, str, Any]] = [
    ("control", "unlock_key", {}),
    ("control", "lock_key", {}),
    ("control", "ignition_on", {}),
    ("control", "ignition_off", {}),
    ("control", "open_door", {"door": "front_left"}),
    ("control", "open_door", {"door": "trunk"}),
    ("control", "close_door", {"door": "front_left"}),
    ("control", "close_door", {"door": "trunk"}),
    ("control", "drive_to", {"lat": HOME.lat + 0.01, "lon": HOME.lon}),
    ("control", "drive_to", {"lat": HOME.lat, "lon": HOME.lon}),
    ("control", "set_privacy", {"mode": "max"}),
    ("control", "set_privacy", {"mode": "no_position"}),
    ("control", "set_privacy", {"mode": "off"}),
    ("control", "factory_reset", {}),
    ("control", "set_battery", {"voltage": 11.85}),
    ("execute", "lock", {}),
    ("execute", "unlock", {}),
    ("execute", "aux_heating.start", {}),
    ("execute", "ventilation.start", {"duration_min": 10}),
    ("execute", "aux_heating.stop", {}),
]
everyday = st.sampled_from(EVERYDAY)

# Starting states worth exploring from, reached the way a person would.
_UNLOCK: tuple[str, str, Any] = ("control", "unlock_key", {})
_OPEN: tuple[str, str, Any] = ("control", "open_door", {"door": "hood"})
PREFIXES: list[list[tuple[str, str, Any]]] = [
    [],
    [_UNLOCK],
    [_UNLOCK, _OPEN],
    [_UNLOCK, _OPEN, ("control", "ignition_on", {})],
    [("control", "drive_to", {"lat": HOME.lat + 0.02, "lon": HOME.lon})],
    [("execute", "aux_heating.start", {})],
]

steps = st.lists(
    st.tuples(
        st.one_of(everyday, everyday, everyday, controls(), commands(), st.just(("advance", "", None))),
        st.sampled_from([0.0, 0.0, 1.0, 30.0, 61.0, 600.0, 3600.0, -30.0]),
    ),
    max_size=30,
)


def check_invariants(car: Vehicle, now: float) -> None:
    status = car.snapshot(now, online=True, signal_pct=50)  # builds (validates) the full pydantic model
    if status.locked:
        assert not car.open_doors, "locked with a door open"
        assert not any(status.doors.get(d).open for d in DoorName)
    if status.moving:
        assert status.parking_position is None
        assert car.parked_at is None
        assert not car.open_doors
        assert car.ignition_on
    else:
        assert car.parked_at is not None
    if car.privacy_mode is not PrivacyMode.OFF:
        assert status.parking_position is None
    if car.ignition_on or car.moving:
        assert car.aux_state is AuxState.OFF
    caps = car.capabilities
    if car.aux_state is AuxState.HEATING:
        assert caps.aux_heater
    if car.aux_state is AuxState.VENTILATION:
        assert caps.ventilation
    assert 0.0 <= car.fuel_level_pct <= 100.0
    assert 0.0 <= car.battery_12v_v <= 16.0
    assert car.sends_status() is (car.privacy_mode is not PrivacyMode.MAX)


@settings(max_examples=250, deadline=None)
@given(
    combination=st.sampled_from(COMBINATIONS),
    seed=st.integers(0, 2**16),
    prefix=st.sampled_from(PREFIXES),
    script=steps,
)
def test_random_sequences_keep_the_invariants(
    combination: tuple[VehicleModel, Any],
    seed: int,
    prefix: list[tuple[str, str, Any]],
    script: list[tuple[tuple[str, str, Any], float]],
) -> None:
    rng = random.Random(seed)
    car = Vehicle.new("VSSZZZKJZRR000000", *combination, HOME, rng, T0)
    assert car.capabilities is capabilities(*combination)
    now = T0
    last_event_at = 0.0
    revision = car.revision
    odometer = car.odometer_km
    for (kind, name, params), dt in [(step, 0.0) for step in prefix] + script:
        now += dt  # sometimes backwards: the car must treat that as no time passed
        events: list[Event] = car.advance(now)  # time first, so what follows happens at one moment
        assert all(car.sends_event(e.type) for e in events), "max privacy let an event out"
        before = state_of(car)
        if kind == "control":
            try:
                done = car.control(name, params, now)
            except VehicleError:
                assert state_of(car) == before, f"refused {name} changed the car"
            else:
                events += done
                assert all(car.sends_event(e.type) for e in done), "max privacy let an event out"
        elif kind == "execute":
            try:
                outcome = car.execute(name, params, now)
            except VehicleError:
                assert state_of(car) == before, f"invalid {name} changed the car"
            else:
                events += outcome.events
                assert all(car.sends_event(e.type) for e in outcome.events), "max privacy let an event out"
                if not outcome.succeeded:
                    assert outcome.reason is not None
                    assert outcome.events == ()
                    assert state_of(car) == before, f"failed {name} changed the car"
        for event in events:
            assert event.at >= last_event_at - 1e-6, "events out of order"
            last_event_at = event.at
        assert car.revision >= revision
        assert car.odometer_km >= odometer
        revision, odometer = car.revision, car.odometer_km
        check_invariants(car, now)
