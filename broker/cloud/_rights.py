"""Who may use which service of a car (R10), and what each remote command needs (SPEC §2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from broker.registry import Role
from tcu_sim.protocol import CommandOp

__all__ = [
    "OP_RIGHTS",
    "ROLE_RIGHTS",
    "SPIN_OPS",
    "Right",
    "rights_of",
]


class Right(StrEnum):
    """A service of the car a role may use."""

    DRIVING_DATA = "driving_data"
    VEHICLE_STATUS = "vehicle_status"
    HEALTH_REPORT = "health_report"
    PARKING_POSITION = "parking_position"
    REMOTE_LOCK = "remote_lock"
    REMOTE_CLIMATE = "remote_climate"  # remote ventilation and auxiliary heater
    HONK_AND_FLASH = "honk_and_flash"
    LICENCE_STATUS = "licence_status"
    ROADSIDE = "roadside"  # online roadside assistance: the cases opened by a breakdown call
    SPEED_ALERT = "speed_alert"
    AREA_ALERT = "area_alert"
    SERVICE_SCHEDULING = "service_scheduling"
    STORE = "store"  # in-car store, CUPRA store, data plan: buying and cancelling licences
    MANAGE_USERS = "manage_users"  # nominating and removing secondary users


_SECONDARY: Final = frozenset(
    {
        Right.DRIVING_DATA,
        Right.VEHICLE_STATUS,
        Right.HEALTH_REPORT,
        Right.PARKING_POSITION,
        Right.REMOTE_LOCK,
        Right.REMOTE_CLIMATE,
        Right.HONK_AND_FLASH,
        Right.LICENCE_STATUS,
        Right.ROADSIDE,
    }
)

#: R10: the primary user has every right; a secondary user everything but the alerts, service scheduling,
#: the stores and managing users (driving data, health report and roadside assistance included).
ROLE_RIGHTS: Final[Mapping[Role, frozenset[Right]]] = {
    Role.PRIMARY: frozenset(Right),
    Role.SECONDARY: _SECONDARY,
}

#: The right each command an app may send needs. `infotainment.notify` is missing on purpose: only the cloud
#: itself sends it (primary-user confirmation, licence notices).
OP_RIGHTS: Final[Mapping[CommandOp, Right]] = {
    CommandOp.LOCK: Right.REMOTE_LOCK,
    CommandOp.UNLOCK: Right.REMOTE_LOCK,
    CommandOp.HONK_AND_FLASH: Right.HONK_AND_FLASH,
    CommandOp.AUX_HEATING_START: Right.REMOTE_CLIMATE,
    CommandOp.AUX_HEATING_STOP: Right.REMOTE_CLIMATE,
    CommandOp.VENTILATION_START: Right.REMOTE_CLIMATE,
    CommandOp.VENTILATION_STOP: Right.REMOTE_CLIMATE,
    CommandOp.STATUS_REFRESH: Right.VEHICLE_STATUS,
}

#: Commands that need the S-PIN (SPEC §2.3).
SPIN_OPS: Final = frozenset(
    {CommandOp.LOCK, CommandOp.UNLOCK, CommandOp.AUX_HEATING_START, CommandOp.VENTILATION_START}
)


def rights_of(role: Role) -> frozenset[Right]:
    """The rights of a role."""
    return ROLE_RIGHTS[role]
