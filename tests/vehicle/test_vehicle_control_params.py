"""`CONTROL_PARAMS` is what the model reads: every declared parameter is taken, nothing else is, and the
description `tcu-sim car --help` prints comes from the same declarations."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest

from tcu_sim.protocol import ControlAction
from tcu_sim.vehicle import CONTROL_PARAMS, ControlRefused, InvalidControl, Param, Vehicle, check_control

T0 = 1_700_000_000.0
ACTIONS = [a for a in ControlAction if a is not ControlAction.FAULT]


def _valid(param: Param) -> Any:
    if param.kind == "choice":
        assert param.choices is not None
        return next(iter(param.choices)).value
    if param.kind == "number":
        return (param.low + param.high) / 2
    if param.kind == "integer":
        return int(param.high)
    if param.kind == "email":
        return "someone@example.test"
    assert param.pattern is not None
    return next(v for v in ("12345678", "a password") if param.pattern.fullmatch(v))


@pytest.mark.parametrize("action", ACTIONS, ids=str)
def test_the_declared_parameters_are_the_ones_the_car_reads(action: ControlAction) -> None:
    car = Vehicle.new("VSSZZZKJZRR000000", "formentor", "navigation", (41.4, 2.17), random.Random(1), T0)
    params = {p.name: _valid(p) for p in CONTROL_PARAMS.get(action, ())}
    check_control(action, params)
    with contextlib.suppress(ControlRefused):  # a refusal for the car's state is fine; a parameter error is not
        car.control(action, params, T0)
    with pytest.raises(InvalidControl, match="unknown parameter"):
        check_control(action, {**params, "surplus": 1})


@pytest.mark.parametrize("action", [a for a in ACTIONS if any(
    p.default is None and not p.optional for p in CONTROL_PARAMS.get(a, ()))], ids=str)
def test_a_missing_required_parameter_is_refused_by_car_and_check_alike(action: ControlAction) -> None:
    car = Vehicle.new("VSSZZZKJZRR000000", "formentor", "navigation", (41.4, 2.17), random.Random(1), T0)
    with pytest.raises(InvalidControl, match="missing parameter"):
        check_control(action, {})
    with pytest.raises(InvalidControl, match="missing parameter"):
        car.control(action, {}, T0)


def test_descriptions() -> None:
    described = {a: " ".join(p.describe() for p in CONTROL_PARAMS[a]) for a in CONTROL_PARAMS}
    assert described[ControlAction.SET_BATTERY] == "voltage=0..16"
    assert described[ControlAction.TKOV] == "keys=0..2 (default 2)"
    assert described[ControlAction.ENTER_PAIRING_CODE] == "code=<8 digits>"
    assert described[ControlAction.DRIVE_TO].startswith("lat=-90..90 lon=-180..180 speed_kmh=5..250 (optional")
