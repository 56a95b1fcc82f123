"""The HTTP app API's request bodies, results and problem documents, as pydantic models: FastAPI validates
bodies with them and the OpenAPI document is generated from them.

A body becomes the `params` of an `AppRequest` (`model_dump(exclude_none=True)`), so every rule stays where it
is for MQTT too (the cloud's `AppRequests` and domain services); these models only say what a body looks like.
Results are documented with their known fields and may carry more (`extra="allow"`): they are the MQTT
`result` objects as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from tcu_sim.protocol import ErrorCode

__all__ = [
    "ERROR_STATUS",
    "AddVehicleBody",
    "AreaAlertBody",
    "ChangePasswordBody",
    "ChangeSpinBody",
    "CommandAccepted",
    "CommandBody",
    "CommandStatus",
    "EmailBody",
    "LicenceRenewBody",
    "LicenceStatus",
    "LoginBody",
    "LoginResult",
    "Mailbox",
    "Problem",
    "ReauthTimeoutBody",
    "RegisterBody",
    "Result",
    "ServiceBookingBody",
    "SpeedAlertBody",
    "VehicleAdded",
    "VehicleList",
    "VehicleStatus",
    "VerifyEmailBody",
]

#: The HTTP status of each app API error code. `VEHICLE_NOT_FOUND` is 404 for an unknown VIN and for somebody
#: else's car alike.
ERROR_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.SESSION_EXPIRED: 401,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.USER_NOT_VERIFIED: 403,
    ErrorCode.TERMS_AND_CONDITIONS_NOT_ACCEPTED: 400,
    ErrorCode.VEHICLE_NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_RIGHTS: 403,
    ErrorCode.GARAGE_FULL: 409,
    ErrorCode.PAIRING_CODE_INVALID: 400,
    ErrorCode.PAIRING_CODE_EXPIRED: 410,
    ErrorCode.SPIN_REQUIRED: 403,
    ErrorCode.SPIN_INCORRECT: 403,
    ErrorCode.SPIN_LOCKED: 423,
    ErrorCode.SPIN_POLICY: 400,
    ErrorCode.LICENSE_EXPIRED: 403,
    ErrorCode.LICENSE_MISSING: 403,
    ErrorCode.PRIVACY_MODE: 409,
    ErrorCode.VEHICLE_OFFLINE: 409,
    ErrorCode.UNSUPPORTED_BY_VEHICLE: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CANCELLATION_PERIOD_OVER: 409,
}

_Short = Annotated[str, Field(min_length=1, max_length=1024)]
_Email = Annotated[str, Field(min_length=1, max_length=254)]
_Spin = Annotated[str, Field(min_length=1, max_length=16)]


class _Body(BaseModel):
    # strict: JSON "10" is not the number 10; forbid: a misspelt field is an error, not silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class RegisterBody(_Body):
    """A new CUPRA ID (R1, R2): the answer is the same whether or not the address is taken."""

    email: _Email
    password: _Short
    spin: _Spin


class VerifyEmailBody(_Body):
    """The code of the verification mail's link."""

    code: Annotated[str, Field(min_length=1, max_length=256)]


class LoginBody(_Body):
    """E-mail and password; the answer carries the bearer token."""

    email: _Email
    password: _Short


class ChangePasswordBody(_Body):
    """Every other session of the user ends (R17)."""

    old_password: _Short
    new_password: _Short


class ChangeSpinBody(_Body):
    """Needs a car in the garage (R4)."""

    old_spin: _Spin | None = None
    new_spin: _Spin


class ReauthTimeoutBody(_Body):
    """Minutes without activity after which the app must log in again (R17); null: never."""

    minutes: Literal[5, 10, 15] | None


class AddVehicleBody(_Body):
    """A car by VIN, with the terms accepted (R5)."""

    vin: Annotated[str, Field(min_length=1, max_length=64)]
    accept_terms: bool


class EmailBody(_Body):
    """A secondary user to invite (primary user only)."""

    email: _Email


class CommandBody(_Body):
    """A remote command (SPEC §2.3); `spin` for the ops that need it."""

    op: Annotated[str, Field(min_length=1, max_length=64)] = Field(examples=["lock"])
    params: dict[str, Any] = Field(default_factory=dict)
    spin: _Spin | None = None


class SpeedAlertBody(_Body):
    """Primary user only (R10)."""

    max_speed_kmh: Annotated[int, Field(ge=30, le=250)]
    enabled: bool = True


class AreaAlertBody(_Body):
    """Primary user only (R10)."""

    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    radius_m: Annotated[int, Field(ge=100, le=100_000)]
    enabled: bool = True


class ServiceBookingBody(_Body):
    """Primary user only (R10)."""

    date: Annotated[str, Field(min_length=1, max_length=32)] = Field(examples=["2026-12-24"])
    workshop: Annotated[str, Field(max_length=200)] | None = None


class LicenceRenewBody(_Body):
    """Years to add to the car's services (R14)."""

    years: Annotated[int, Field(ge=1, le=5)] = 1


# -- results -------------------------------------------------------------------------------------------------
class Result(BaseModel):
    """A result object; the fields of each operation are in docs/app-api.md."""

    model_config = ConfigDict(extra="allow")


class LoginResult(Result):
    """`token` is the bearer token for every other call."""

    token: str
    user_id: str
    email: str
    verified: bool


class Mailbox(Result):
    """The simulated e-mails sent to the user, oldest first."""

    mails: list[dict[str, Any]]


class VehicleAdded(Result):
    """How the enrolment completes: two-key verification in the car, or a pairing code typed into it."""

    vin: str
    method: Literal["tkov", "pairing_code"]
    pairing_code: str | None = None
    expires_at: float | None = None


class VehicleList(Result):
    """The cars of the user's garage."""

    vehicles: list[dict[str, Any]]


class VehicleStatus(Result):
    """The car's last status snapshot (SPEC §2.4), or null before the first."""

    vin: str
    online: bool | None
    privacy_mode: str | None
    updated_at: float | None
    status: dict[str, Any] | None


class CommandAccepted(Result):
    """The command created (or, for an `Idempotency-Key` seen before, the one created then)."""

    command_id: str
    state: str


class CommandStatus(Result):
    """Where a command is, with its history."""

    command_id: str
    vin: str
    op: str
    state: str
    history: list[dict[str, Any]]


class LicenceStatus(Result):
    """The car's services licence (R11, R14 to R16)."""

    vin: str
    valid: bool


class Problem(BaseModel):
    """An error, as `application/problem+json` (RFC 9457): `code` is the app API's error code (SPEC §2.5), with
    its details where it has them."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="`urn:tcu-sim:error:<code>`")
    title: str = Field(description="The error code")
    status: int
    detail: str = Field(description="What an app may show")
    code: ErrorCode
    remaining_tries: int | None = Field(default=None, description="SPIN_INCORRECT: tries left before the lock")
    locked_seconds: int | None = Field(default=None, description="SPIN_LOCKED: seconds until it can be tried again")
    retry_after_s: float | None = Field(default=None, description="RATE_LIMITED: seconds to wait")
