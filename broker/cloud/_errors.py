"""Errors of the cloud's domain services: one root, `CloudError`, each subclass bound to one app error code.

Subclasses are grouped by what the caller (the app, through the MQTT handler) does about them:

- `AuthenticationError` — log in again (`UNAUTHENTICATED`, `SESSION_EXPIRED`);
- `RequestRefused` — fix the request (`INVALID_REQUEST`, terms, S-PIN policy, pairing code, garage full, ...);
- `AccessDenied` — the user may not do this to this car (`VEHICLE_NOT_FOUND`, `INSUFFICIENT_RIGHTS`, ...);
- `SpinError` — the S-PIN was missing or wrong, or is locked (carries `remaining_tries` / `locked_seconds`);
- `ServiceUnavailable` — the car cannot offer the service now (licence, privacy, capability, offline);
- `RateLimited` — try again after `retry_after_s`.

Messages are written for the app's user and never contain a secret (password, S-PIN, token, pairing code).
"""

from __future__ import annotations

import math
from typing import ClassVar

from tcu_sim.protocol import AppError, ErrorCode

__all__ = [
    "AccessDenied",
    "AuthenticationError",
    "CancellationPeriodOver",
    "CloudError",
    "GarageFull",
    "InsufficientRights",
    "InvalidRequest",
    "LicenseExpired",
    "LicenseMissing",
    "PairingCodeExpired",
    "PairingCodeInvalid",
    "PrivacyModeOn",
    "RateLimited",
    "RequestRefused",
    "ServiceUnavailable",
    "SessionExpired",
    "SpinError",
    "SpinIncorrect",
    "SpinLocked",
    "SpinPolicyViolation",
    "SpinRequired",
    "TermsNotAccepted",
    "Unauthenticated",
    "UnsupportedByVehicle",
    "UserNotVerified",
    "VehicleNotFound",
    "VehicleOffline",
]


class CloudError(Exception):
    """A request the cloud refuses; `code` is the app error code, `message` what the app may show."""

    code: ClassVar[ErrorCode]
    default_message: ClassVar[str] = "The request was refused."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def details(self) -> dict[str, int | float]:
        """The extra fields this code carries in the app's error object (none for most codes)."""
        return {}

    def to_app_error(self) -> AppError:
        """The `error` object of the app response."""
        return AppError.model_validate({"code": self.code, "message": self.message, **self.details()})

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.details().items())
        return f"{type(self).__name__}({self.message!r}{extra})"


# -- log in again --------------------------------------------------------------------------------------------
class AuthenticationError(CloudError):
    """No valid session: the app must log in (again)."""


class Unauthenticated(AuthenticationError):
    """No token, an unknown or revoked one, or wrong login data."""

    code = ErrorCode.UNAUTHENTICATED
    default_message = "Please log in."


class SessionExpired(AuthenticationError):
    """The session was idle longer than the user's re-authentication timeout (R17), or is too old."""

    code = ErrorCode.SESSION_EXPIRED
    default_message = "Your session has expired. Please enter your password again."


# -- fix the request -----------------------------------------------------------------------------------------
class RequestRefused(CloudError):
    """The request itself cannot be carried out as it stands."""


class InvalidRequest(RequestRefused):
    """A parameter is missing or wrong."""

    code = ErrorCode.INVALID_REQUEST
    default_message = "The request is not valid."


class TermsNotAccepted(RequestRefused):
    """A car is added only with the terms and conditions accepted (R5)."""

    code = ErrorCode.TERMS_AND_CONDITIONS_NOT_ACCEPTED
    default_message = "Please accept the terms and conditions of CUPRA CONNECT."


class SpinPolicyViolation(RequestRefused):
    """The new S-PIN is not 4 digits or is trivial (R2)."""

    code = ErrorCode.SPIN_POLICY
    default_message = "The S-PIN must be 4 digits and not easy to guess (like 0000 or 1234)."


class GarageFull(RequestRefused):
    """The user's garage already holds the maximum number of cars (R9)."""

    code = ErrorCode.GARAGE_FULL
    default_message = "Your garage is full: remove a car before adding another one."


class PairingCodeInvalid(RequestRefused):
    """The pairing code entered in the car is not one issued for it (or was voided, R6)."""

    code = ErrorCode.PAIRING_CODE_INVALID
    default_message = "This registration code is not valid for this car."


class PairingCodeExpired(RequestRefused):
    """The pairing code is older than its validity (1 year, R6)."""

    code = ErrorCode.PAIRING_CODE_EXPIRED
    default_message = "This registration code has expired. Remove the car and add it again for a new one."


class CancellationPeriodOver(RequestRefused):
    """The 14-day withdrawal period of the purchase has passed (R15)."""

    code = ErrorCode.CANCELLATION_PERIOD_OVER
    default_message = "The 14-day cancellation period is over; the service runs to the end of its term."


# -- not allowed for this user and car -----------------------------------------------------------------------
class AccessDenied(CloudError):
    """The user may not do this (to this car)."""


class VehicleNotFound(AccessDenied):
    """The car is not in the user's garage, or does not exist. The two must be indistinguishable, so the
    message is one constant and never names the VIN."""

    code = ErrorCode.VEHICLE_NOT_FOUND
    default_message = "No vehicle with this VIN is in your garage."

    def __init__(self) -> None:
        super().__init__()


class InsufficientRights(AccessDenied):
    """The user's role for the car does not include this service (R10)."""

    code = ErrorCode.INSUFFICIENT_RIGHTS
    default_message = "Only the primary user of this car can use this service."


class UserNotVerified(AccessDenied):
    """The CUPRA ID's e-mail address is not verified yet (R1)."""

    code = ErrorCode.USER_NOT_VERIFIED
    default_message = "Please verify your e-mail address first, with the link we sent you."


# -- S-PIN ---------------------------------------------------------------------------------------------------
class SpinError(CloudError):
    """The service needs the S-PIN, and it was missing, wrong, or is locked (R3)."""


class SpinRequired(SpinError):
    """This service needs the S-PIN."""

    code = ErrorCode.SPIN_REQUIRED
    default_message = "Please enter your S-PIN."


class SpinIncorrect(SpinError):
    """Wrong S-PIN; `remaining_tries` before the S-PIN locks."""

    code = ErrorCode.SPIN_INCORRECT

    def __init__(self, remaining_tries: int) -> None:
        self.remaining_tries = remaining_tries
        tries = "try" if remaining_tries == 1 else "tries"
        super().__init__(f"The S-PIN is not correct. {remaining_tries} {tries} left.")

    def details(self) -> dict[str, int | float]:
        return {"remaining_tries": self.remaining_tries}


class SpinLocked(SpinError):
    """Too many wrong S-PINs; locked for `locked_seconds` more."""

    code = ErrorCode.SPIN_LOCKED

    def __init__(self, locked_seconds: float) -> None:
        self.locked_seconds = max(1, math.ceil(locked_seconds))
        super().__init__(f"The S-PIN is locked after too many wrong tries. Try again in {self.locked_seconds} s.")

    def details(self) -> dict[str, int | float]:
        return {"locked_seconds": self.locked_seconds}


# -- the car cannot offer the service ------------------------------------------------------------------------
class ServiceUnavailable(CloudError):
    """The service is not available for this car right now (R11-R13)."""


class LicenseMissing(ServiceUnavailable):
    """The car's services were never activated: only the emergency call works (R12)."""

    code = ErrorCode.LICENSE_MISSING
    default_message = "CUPRA CONNECT services are not activated for this car; only the emergency call works."


class LicenseExpired(ServiceUnavailable):
    """The car's licence has ended: only the emergency call works until it is renewed (R12, R14)."""

    code = ErrorCode.LICENSE_EXPIRED
    default_message = "The CUPRA CONNECT licence of this car has expired; renew it in the store."


class PrivacyModeOn(ServiceUnavailable):
    """The car is in maximum privacy: services are unavailable (R13)."""

    code = ErrorCode.PRIVACY_MODE
    default_message = "The car is in maximum privacy mode; remote services are unavailable."


class VehicleOffline(ServiceUnavailable):
    """The car has no data connection (R6: it cannot accept a pairing code; R11)."""

    code = ErrorCode.VEHICLE_OFFLINE
    default_message = "The car is not connected."


class UnsupportedByVehicle(ServiceUnavailable):
    """The car's model and equipment do not have this function (R11)."""

    code = ErrorCode.UNSUPPORTED_BY_VEHICLE
    default_message = "This car does not support this service."


# -- slow down -----------------------------------------------------------------------------------------------
class RateLimited(CloudError):
    """Too many requests; retry after `retry_after_s` seconds."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = round(max(0.0, retry_after_s), 3)
        super().__init__(f"Too many requests. Try again in {self.retry_after_s:g} s.")

    def details(self) -> dict[str, int | float]:
        return {"retry_after_s": self.retry_after_s}
