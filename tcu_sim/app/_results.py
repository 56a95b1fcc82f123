"""Typed results of the app API calls whose shape the app relies on (the rest come back as plain dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tcu_sim.protocol import CommandState

from ._errors import AppProtocolError

__all__ = ["CommandInfo", "LoginInfo", "Mail", "VehicleAdded"]


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise AppProtocolError(f"response result: {key!r} must be a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise AppProtocolError(f"response result: {key!r} must be a string or null")
    return value


def _opt_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AppProtocolError(f"response result: {key!r} must be a number or null")
    return float(value)


@dataclass(frozen=True, slots=True)
class LoginInfo:
    """A new session; the client keeps `token` and sends it with every later request."""

    token: str = field(repr=False)
    user_id: str
    email: str
    verified: bool

    @classmethod
    def from_result(cls, data: Mapping[str, Any]) -> LoginInfo:
        """Read the `result` of a `login` response."""
        return cls(
            token=_str(data, "token"),
            user_id=_str(data, "user_id"),
            email=_str(data, "email"),
            verified=bool(data.get("verified", False)),
        )


@dataclass(frozen=True, slots=True)
class VehicleAdded:
    """How the car is to be enrolled: `tkov` (in the car, with both keys) or `pairing_code` (entered in the
    infotainment before `expires_at`)."""

    vin: str
    method: str
    pairing_code: str | None = field(default=None, repr=False)
    expires_at: float | None = None

    @classmethod
    def from_result(cls, data: Mapping[str, Any], vin: str) -> VehicleAdded:
        """Read the `result` of an `add_vehicle` response."""
        return cls(
            vin=_opt_str(data, "vin") or vin,
            method=_str(data, "method"),
            pairing_code=_opt_str(data, "pairing_code"),
            expires_at=_opt_float(data, "expires_at"),
        )


@dataclass(frozen=True, slots=True)
class Mail:
    """One e-mail of the simulated mailbox."""

    at: float
    to: str
    subject: str
    body: str = field(repr=False)

    @classmethod
    def from_result(cls, data: Mapping[str, Any]) -> Mail:
        """Read one entry of a `mailbox` response."""
        return cls(
            at=_opt_float(data, "at") or 0.0, to=_str(data, "to"), subject=_str(data, "subject"),
            body=_str(data, "body"),
        )


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A remote command and where it is in its lifecycle."""

    command_id: str
    state: CommandState
    vin: str | None = None
    op: str | None = None
    reason: str | None = None
    detail: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    expires_at: float | None = None

    @classmethod
    def from_result(cls, data: Mapping[str, Any]) -> CommandInfo:
        """Read a `command_status` result, or the data of a `command_progress` push event."""
        try:
            state = CommandState(_str(data, "state"))
        except ValueError:
            raise AppProtocolError("response result: unknown command state") from None
        return cls(
            command_id=_str(data, "command_id"),
            state=state,
            vin=_opt_str(data, "vin"),
            op=_opt_str(data, "op"),
            reason=_opt_str(data, "reason"),
            detail=_opt_str(data, "detail"),
            created_at=_opt_float(data, "created_at"),
            updated_at=_opt_float(data, "updated_at"),
            expires_at=_opt_float(data, "expires_at"),
        )
