"""The operations of the app API (SPEC §2.5): the `op` of an `AppRequest`, shared by the app client and the cloud."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["PUBLIC_OPS", "AppOp"]


class AppOp(StrEnum):
    """Every op the cloud answers on `app/{client_id}/requests`."""

    # account
    REGISTER = "register"
    VERIFY_EMAIL = "verify_email"
    LOGIN = "login"
    LOGOUT = "logout"
    CHANGE_PASSWORD = "change_password"  # noqa: S105 - an op name, not a password
    CHANGE_SPIN = "change_spin"
    SET_REAUTH_TIMEOUT = "set_reauth_timeout"
    MAILBOX = "mailbox"
    # garage
    ADD_VEHICLE = "add_vehicle"
    REMOVE_VEHICLE = "remove_vehicle"
    LIST_VEHICLES = "list_vehicles"
    VEHICLE_STATUS = "vehicle_status"
    INVITE_SECONDARY = "invite_secondary"
    REMOVE_SECONDARY = "remove_secondary"
    # commands
    COMMAND = "command"
    COMMAND_STATUS = "command_status"
    # services for primary and secondary users
    DRIVING_DATA = "driving_data"
    HEALTH_REPORT = "health_report"
    ROADSIDE_STATUS = "roadside.status"
    # primary-only services
    SPEED_ALERT_SET = "speed_alert.set"
    SPEED_ALERT_GET = "speed_alert.get"
    SPEED_ALERT_DELETE = "speed_alert.delete"
    AREA_ALERT_SET = "area_alert.set"
    AREA_ALERT_GET = "area_alert.get"
    AREA_ALERT_DELETE = "area_alert.delete"
    SERVICE_SCHEDULING_BOOK = "service_scheduling.book"
    SERVICE_SCHEDULING_LIST = "service_scheduling.list"
    SERVICE_SCHEDULING_CANCEL = "service_scheduling.cancel"
    # licences (the store)
    LICENCE_STATUS = "licence_status"
    LICENCE_RENEW = "licence.renew"
    LICENCE_CANCEL = "licence.cancel"


#: Ops that need no session token.
PUBLIC_OPS: Final = frozenset({AppOp.REGISTER, AppOp.VERIFY_EMAIL, AppOp.LOGIN})
