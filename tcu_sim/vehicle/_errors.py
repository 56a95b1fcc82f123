"""Errors of the vehicle model: one root, subclasses grouped by what the caller does about them.

`VehicleError` is a `ValueError`, so a layer that only knows "bad input" can catch that. Messages never contain
the value of a password or pairing code. A model/equipment combination that is not built is refused by the
catalogue of `tcu_sim.protocol` with `UnsupportedConfiguration`, also a `ValueError` (re-exported here).
"""

from __future__ import annotations

from tcu_sim.protocol import FailureReason

__all__ = [
    "ControlRefused",
    "InvalidCommand",
    "InvalidControl",
    "VehicleError",
]


class VehicleError(ValueError):
    """Root of every error `tcu_sim.vehicle` raises on bad input; the car's state is never changed by one."""


class InvalidControl(VehicleError):
    """A simulator control with an unknown action or bad parameters (the operator's mistake)."""

    def __init__(self, action: str, detail: str) -> None:
        super().__init__(f"{action}: {detail}")
        self.action = action
        self.detail = detail


class ControlRefused(InvalidControl):
    """A well-formed control the car refuses in its present state (locking with a door open, ...).

    `reason` is the matching command failure reason where there is one (`door_open`, `vehicle_moving`, ...).
    """

    def __init__(self, action: str, detail: str, reason: FailureReason | None = None) -> None:
        super().__init__(action, detail)
        self.reason = reason


class InvalidCommand(VehicleError):
    """Command parameters that do not fit the op; the TCU normally validates them before (`command_params`)."""
