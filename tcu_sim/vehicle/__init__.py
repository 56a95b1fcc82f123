"""The pure vehicle model: catalogue, car state, and how a car reacts to commands, people and time. No I/O.

- `capabilities(model, equipment)` says what a model/equipment combination can do (R5 enrolment, heater, ...);
  the catalogue is shared with the cloud, so it lives in `tcu_sim.protocol` and is re-exported here.
- `Vehicle.new(vin, model, equipment, home, rng, now)` builds a parked car with seeded random wear and fill.
- `Vehicle.execute(op, params, now)` runs a remote command → `Outcome` (succeeded, or failed with a
  `FailureReason`; a failed command changes nothing).
- `Vehicle.control(action, params, now)` is what a person at the car does → events, or a `VehicleError`;
  `CONTROL_PARAMS[action]` declares its parameters (`Param.describe()`: name and valid values).
- `Vehicle.advance(now)` lets time pass (heater timers, battery, trips) → events.
- `Vehicle.snapshot(now, online=..., signal_pct=...)` builds the SPEC §2.4 status; `Vehicle.revision` grows on
  every change worth a new status; `Vehicle.sends_status()` is False in maximum privacy.

Time is always passed in (`now`, seconds); randomness only at creation, from a passed-in `random.Random`.
"""

from __future__ import annotations

from tcu_sim.protocol import (
    Capabilities,
    EnrolmentMethod,
    Equipment,
    UnsupportedConfiguration,
    VehicleModel,
    capabilities,
    valid_equipment,
)

from ._errors import ControlRefused, InvalidCommand, InvalidControl, VehicleError
from ._params import Param
from ._vehicle import BATTERY_LOW_V, CONTROL_PARAMS, IDLE_TICK_S, MAX_NOTIFICATIONS, Outcome, Vehicle, check_control

__all__ = [
    "BATTERY_LOW_V",
    "CONTROL_PARAMS",
    "IDLE_TICK_S",
    "MAX_NOTIFICATIONS",
    "Capabilities",
    "ControlRefused",
    "EnrolmentMethod",
    "Equipment",
    "InvalidCommand",
    "InvalidControl",
    "Outcome",
    "Param",
    "UnsupportedConfiguration",
    "Vehicle",
    "VehicleError",
    "VehicleModel",
    "capabilities",
    "check_control",
    "valid_equipment",
]
